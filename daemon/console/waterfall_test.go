package console_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/daemon/console/consoletest"
	"github.com/metal-dev/metal/inventory"
)

// TestBootWaterfallInChromium: a machine's provision, as the servers, the
// agent and the engine record it, is drawn as one bar a phase whose
// start and length are the events' times; beside it the fleet's
// provision times, the slowest named.
func TestBootWaterfallInChromium(t *testing.T) {
	l := serve(t, true)
	bg := context.Background()
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	boot := []inventory.Event{
		{Time: at(0), Kind: inventory.EventApply, Message: "run r9: boot intent install debian-12 (agent task t-9)"},
		{Time: at(20), Kind: inventory.EventDHCPDiscover, Message: "DHCP from 52:54:00:00:02:02"},
		{Time: at(21), Kind: inventory.EventDHCPAck, Message: "ack 192.0.2.12"},
		{Time: at(23), Kind: inventory.EventTFTP, Message: "tftp undionly.kpxe"},
		{Time: at(24), Kind: inventory.EventScript, Message: "fetched /ipxe/52:54:00:00:02:02"},
		{Time: at(26), Kind: inventory.EventKernel, Message: "fetched /files/agent/vmlinuz"},
		{Time: at(31), Kind: inventory.EventInitrd, Message: "fetched /files/agent/initrd"},
		{Time: at(40), Kind: inventory.EventAgent, Message: "agent task t-9: started; its boot script is not served again"},
		{Time: at(41), Kind: inventory.EventImage, Message: "fetched /images/debian-12.raw"},
		{Time: at(45), Kind: inventory.EventAgent, Message: "agent task t-9: running (writing)"},
		{Time: at(100), Kind: inventory.EventAgent, Message: "agent task t-9: running (seeding)"},
		{Time: at(102), Kind: inventory.EventAgent, Message: "agent task t-9: done (rebooting)"},
		{Time: at(130), Kind: inventory.EventDHCPDiscover, Message: "DHCP from 52:54:00:00:02:02"},
		{Time: at(133), Kind: inventory.EventScript, Message: "fetched /ipxe/52:54:00:00:02:02"},
		{Time: at(160), Kind: inventory.EventAgent, Message: "installed OS reported ready (phone-home from 192.0.2.12, install task t-9)"},
		{Time: at(170), Kind: inventory.EventApply, Message: "run r9: provisioned with debian-12"},
	}
	for _, e := range boot {
		e.Machine = "web-02"
		if _, err := l.Store.AppendEvent(bg, e); err != nil {
			t.Fatal(err)
		}
	}
	// The fleet: provisions of 300 s, 170 s and 90 s.
	for name, took := range map[string]time.Duration{"web-01": 300 * time.Second, "web-02": 170 * time.Second, "db-01": 90 * time.Second} {
		if _, err := inventory.UpdateMachine(bg, l.Store, name, func(m *inventory.Machine) error {
			return m.SetState(inventory.StateProvisioned, "apply run r9", m.Since().Add(took))
		}); err != nil {
			t.Fatal(err)
		}
	}

	ctx := consoletest.Browser(t)
	type bar struct {
		Phase          string
		OffsetS, TookS float64
		X, W           float64
	}
	var bars []bar
	var slowest []string
	var mine int
	consoletest.Run(t, ctx, "machine page",
		chromedp.Navigate(l.url+console.Prefix+"machines/web-02"),
		chromedp.WaitVisible(`#waterfall svg .bar`),
		chromedp.Evaluate(`[...document.querySelectorAll("#waterfall .bar")].map(g => { const r = g.querySelector("rect"); return {Phase: g.dataset.phase, OffsetS: g.dataset.offsetMs/1000, TookS: g.dataset.ms/1000, X: +r.getAttribute("x"), W: +r.getAttribute("width")} })`, &bars),
		chromedp.Evaluate(`[...document.querySelectorAll("#histogram .slowest li")].map(li => li.textContent)`, &slowest),
		chromedp.Evaluate(`document.querySelectorAll("#histogram .hbar.mine").length`, &mine),
	)
	type span struct {
		Phase          string
		OffsetS, TookS float64
	}
	want := []span{
		{"power on + POST", 0, 20}, {"DHCP", 20, 3}, {"TFTP + script", 23, 3}, {"kernel + initrd", 26, 14},
		{"agent fetch", 40, 5}, {"write + verify", 45, 55}, {"seed", 100, 2}, {"reboot", 102, 28}, {"local boot", 130, 40},
	}
	var got []span
	for _, b := range bars {
		got = append(got, span{b.Phase, b.OffsetS, b.TookS})
		// The bars share one axis: 420 units for the 170 s of the provision,
		// from x=130.
		if x, w := 130+420*b.OffsetS/170, 420*b.TookS/170; b.X < x-1 || b.X > x+1 || b.W < w-1 || b.W > w+1 {
			t.Errorf("%s drawn at x=%v width %v, want x=%.1f width %.1f", b.Phase, b.X, b.W, x, w)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("waterfall (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"web-01 5m00s", "web-02 2m50s", "db-01 1m30s"}, slowest); diff != "" {
		t.Errorf("slowest machines (-want +got):\n%s", diff)
	}
	if mine != 1 {
		t.Errorf("%d histogram bars marked as this machine's, want 1", mine)
	}
	consoletest.Screenshot(t, ctx, "waterfall.png")
}
