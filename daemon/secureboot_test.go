package daemon_test

import (
	"strings"
	"testing"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/site"
)

// TestSecureBootChainMissing: a site with a boot = "secureboot" machine
// is refused at start when the signed chain is not where the site says,
// rather than served a netboot that can only fail (never iPXE instead).
func TestSecureBootChainMissing(t *testing.T) {
	empty := t.TempDir()
	_, err := newFailingDaemon(t, func(o *daemon.Options) {
		o.Site.Settings.SecureBootDir = empty
		o.Site.Machines[0].Boot = site.BootSecure
	})
	if err == nil {
		t.Fatal("daemon.New started a secureboot site without its signed chain")
	}
	for _, want := range []string{`"secureboot"`, "shimx64.efi", "shim-signed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("daemon.New: %v; want it to say %s", err, want)
		}
	}
}
