package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
)

// TestPromoteFenceBMC: the old primary's host sits behind a Redfish BMC
// (metal's virtual BMC). Its metal runs only while the host is powered
// on, with a heartbeat interval so long that it would not read the claim
// for a minute. metal promote --force with the site's fence block claims
// the site, powers the host off through the BMC and confirms it off: the
// BMC saw the power-off, the old primary stopped before promote returned,
// and promote says so. Without the fence block, promote says what it
// cannot guarantee.
func TestPromoteFenceBMC(t *testing.T) {
	d := sshdtest.Start(t)
	target := d.URL("ams1")
	ctx := testCtx(t)
	t.Setenv("SSH_AUTH_SOCK", "")

	// The old primary's host: powered on through its BMC, it runs the
	// primary (ships heartbeats), which stops when the host loses power.
	var power context.Context // ends when the host loses power
	running := make(chan struct{})
	host := virtual.NewSim(virtual.SimOptions{Name: "primary-host", OnBoot: func(b virtual.SimBoot) {
		f := arguments.Primary{To: target, Every: time.Minute, Owner: "ams1-a",
			SSH: arguments.SSH{KnownHosts: d.KnownHosts, Identities: []string{d.ClientKey}, Timeout: 5 * time.Second}}
		p, err := f.Start(b.Ctx, slog.New(slog.DiscardHandler), "ams1", t.TempDir())
		if err != nil {
			t.Errorf("the old primary: %v", err)
			return
		}
		power = b.Ctx
		close(running)
		p.Serve(b.Ctx, openSiteStore(t, stateSite(t)))
	}})
	const password = "fence-pw-4411"
	addr, _ := behindRedfish(t, ctx, host, password)
	select {
	case <-running:
	case <-ctx.Done():
		t.Fatal("the old primary never started")
	}

	// Without a fence block: promote claims, and says what it cannot
	// guarantee; the host stays on.
	plain := stateSite(t)
	promote := func(site, owner string) (int, string, string) {
		return metal(t, map[string]string{"METAL_VAR_fence_pw": password},
			append([]string{"promote", "--site", site, "--from", target, "--owner", owner, "--force"}, sshArgs(d)...)...)
	}
	code, stdout, stderr := promote(plain, "ams1-b")
	if code != 0 || !strings.Contains(stdout, "cannot guarantee") || !strings.Contains(stdout, "No fence block") {
		t.Errorf("promote --force without a fence block: exit %d:\n%s%s", code, stdout, stderr)
	}
	if host.Power() != virtual.PowerOn {
		t.Fatalf("the host is %s after a promote without a fence block", host.Power())
	}

	// With one: the host is powered off, and confirmed, before promote
	// returns.
	fenced := stateSite(t)
	b, _ := os.ReadFile(fenced)
	b = fmt.Appendf(b, `
variable "fence_pw" { sensitive = true }

fence {
  bmc {
    address  = "http://%s"
    username = "admin"
    password = var.fence_pw
  }
}
`, addr)
	if err := os.WriteFile(fenced, b, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = promote(fenced, "ams1-c")
	if power.Err() == nil {
		t.Error("promote returned while the old primary's host still had power")
	}
	if code != 0 || !strings.Contains(stdout, "powered off through its BMC") || !strings.Contains(stdout, "confirms it is off") {
		t.Fatalf("promote --force with a fence block: exit %d:\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, password) {
		t.Errorf("promote printed the fence BMC's password:\n%s%s", stdout, stderr)
	}
	if p := host.Power(); p != virtual.PowerOff {
		t.Errorf("the BMC says the host is %s after the fence, want off", p)
	}
	t.Logf("promote:\n%s", stdout)
}
