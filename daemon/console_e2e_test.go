package daemon_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/daemon/console/consoletest"
	"github.com/metal-dev/metal/inventory"
)

// TestConsoleActionsInChromium: an operator in headless Chromium logs in
// to the real daemon's console with an API token, power cycles a machine
// behind its simulated Redfish BMC and reprovisions it through the
// converge engine, each confirmed on its own page, and watches the machine
// become provisioned without reloading. Once the token is revoked, the
// session it opened can act no more.
func TestConsoleActionsInChromium(t *testing.T) {
	l := newFleetLab(t, labOptions{agentTime: 2 * time.Second})
	ctx := consoletest.Browser(t)
	m0 := applytest.Name(0)
	sim := l.fleet.Sim(m0)
	if err := sim.PowerOn(t.Context()); err != nil {
		t.Fatal(err)
	}
	page := l.base + console.Prefix + "machines/" + m0

	// Reads are closed: the machine's page asks for a login first.
	consoletest.Run(t, ctx, "log in",
		chromedp.Navigate(page),
		chromedp.WaitVisible(`#token`),
		chromedp.SendKeys(`#token`, l.token),
		chromedp.Click(`#login`),
		chromedp.WaitVisible(`#machine-live`),
	)

	boots := len(sim.Boots())
	var flash string
	consoletest.Run(t, ctx, "power cycle",
		chromedp.Click(`a[href*="action=power-cycle"]`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#confirm`),
		chromedp.SendKeys(`#reason`, "hung kernel"),
		chromedp.Click(`#confirm`),
		chromedp.WaitVisible(`.flash`),
		chromedp.Text(`.flash`, &flash),
	)
	if want := `Done: power-cycle of machine ` + m0 + ` by "ops" (reason: hung kernel): done`; flash != want {
		t.Errorf("flash = %q, want %q", flash, want)
	}
	if got := len(sim.Boots()); got != boots+1 {
		t.Errorf("the BMC saw %d starts after the power cycle, want %d", got, boots+1)
	}

	var timeline string
	consoletest.Run(t, ctx, "reprovision",
		chromedp.Click(`a[href*="action=reprovision"]`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#confirm`),
		chromedp.Evaluate(`window.notReloaded = true`, nil),
		chromedp.Click(`#confirm`),
		chromedp.WaitVisible(`.flash`),
		chromedp.Text(`.flash`, &flash),
		chromedp.Evaluate(`window.notReloaded = true`, nil),
		// The engine, the BMC and the simulated agent take it from here;
		// the page follows the store over its event stream.
		chromedp.WaitVisible(`#state .state-provisioned`),
		// The state can show before the event that says so is in the
		// timeline (the store writes the two one after the other).
		chromedp.Poll(`document.querySelector("#timeline").innerText.includes("provisioned with os")`, nil, chromedp.WithPollingTimeout(time.Minute)),
		consoletest.LiveText(`#timeline`, &timeline),
	)
	if !strings.Contains(flash, `Done: reprovision of machine `+m0+` by "ops"`) {
		t.Errorf("flash = %q", flash)
	}
	var notReloaded bool
	consoletest.Run(t, ctx, "no reload", chromedp.Evaluate(`window.notReloaded === true`, &notReloaded))
	if !notReloaded {
		t.Error("the page was reloaded; the machine's progress should arrive over the stream")
	}
	for _, want := range []string{"provisioned with os", "agent task", "reprovision of machine " + m0} {
		if !strings.Contains(timeline, want) {
			t.Errorf("timeline lacks %q:\n%s", want, timeline)
		}
	}
	if m := l.machine(m0); m.State != inventory.StateProvisioned {
		t.Errorf("store: %s is %s, want provisioned", m0, m.State)
	}
	consoletest.Screenshot(t, ctx, "daemon-machine.png")

	// Revoked: a confirm form already open, with its CSRF token, is
	// refused when sent, the BMC sees nothing, and the console asks for a
	// login again.
	consoletest.Run(t, ctx, "confirm page",
		chromedp.Navigate(l.base+console.Prefix+"confirm?action=power-cycle&machine="+m0),
		chromedp.WaitVisible(`#confirm`),
	)
	if err := l.d.Store.DeleteAPIToken(context.Background(), "ops"); err != nil {
		t.Fatal(err)
	}
	boots = len(sim.Boots())
	var refused string
	consoletest.Run(t, ctx, "confirm after revoking",
		chromedp.Click(`#confirm`),
		chromedp.WaitNotPresent(`#confirm`),
		chromedp.Text(`main`, &refused),
	)
	if !strings.Contains(refused, "Actions need a login") {
		t.Errorf("sending the form after the token was revoked shows %q", refused)
	}
	if got := len(sim.Boots()); got != boots {
		t.Errorf("the BMC acted after the token was revoked: %d starts, had %d", got, boots)
	}
	consoletest.Run(t, ctx, "pages after revoking",
		chromedp.Navigate(page),
		chromedp.WaitVisible(`#token`),
	)
}
