package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
)

// TestRedactSensitiveIntent: an intent whose cmdline or file URL came from
// a sensitive variable leaves the server with them hidden; metal's own
// file paths stay, as they hold nothing secret.
func TestRedactSensitiveIntent(t *testing.T) {
	t.Parallel()
	const secret = "Rr5-intent-secret"
	m := inventory.Machine{Name: "m", Intent: inventory.BootIntent{
		Action: inventory.BootInstall, Kernel: "https://u:" + secret + "@mirror/vmlinuz",
		Initrds: []string{"/images/os/initrd"}, Cmdline: "console=ttyS0 key=" + secret, Sensitive: true, Token: "boot-token",
	}}
	got := api.Redact(m)
	b, _ := json.Marshal(got)
	if strings.Contains(string(b), secret) || strings.Contains(string(b), "boot-token") {
		t.Errorf("redacted machine holds a secret: %s", b)
	}
	if got.Intent.Cmdline != inventory.Hidden || got.Intent.Kernel != inventory.Hidden || got.Intent.Initrds[0] != "/images/os/initrd" {
		t.Errorf("intent shown as %+v", got.Intent)
	}
	if m.Intent.Initrds[0] != "/images/os/initrd" || m.Intent.Cmdline == inventory.Hidden {
		t.Error("Redact changed the machine it was given")
	}
	plain := inventory.Machine{Name: "p", Intent: inventory.BootIntent{Kernel: "/k", Cmdline: "console=ttyS0"}}
	if got := api.Redact(plain); got.Intent.Cmdline != "console=ttyS0" {
		t.Errorf("a plain cmdline is hidden: %+v", got.Intent)
	}
}
