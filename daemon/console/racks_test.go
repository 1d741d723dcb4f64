package console_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/daemon/console/consoletest"
	"github.com/metal-dev/metal/inventory"
)

// setLabels gives machines labels in the store, as a site would.
func setLabels(t *testing.T, st inventory.Store, labels map[string]map[string]string) {
	t.Helper()
	for name, l := range labels {
		_, err := inventory.UpdateMachine(context.Background(), st, name, func(m *inventory.Machine) error {
			m.Identity.Labels = l
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestRackElevationInChromium: machines are drawn in their rack at their
// slot, a machine that fails turns up there live, its hover says its
// power and last event, and a click opens it.
func TestRackElevationInChromium(t *testing.T) {
	l := serve(t, true)
	setLabels(t, l.Store, map[string]map[string]string{
		"web-01": {"rack": "r01", "slot": "10"},
		"web-02": {"rack": "r01", "u": "12"},
		"db-01":  {"rack": "r02", "slot": "3"},
	})
	ctx := consoletest.Browser(t)

	type placed struct {
		Rack, Machine, Slot, State string
		Y                          float64
	}
	var got []placed
	read := `[...document.querySelectorAll("figure.rack a.unit")].map(a => ({Rack: a.closest("figure").dataset.rack, Machine: a.dataset.machine, Slot: a.dataset.slot, State: [...a.classList].find(c => c.startsWith("state-")), Y: +a.querySelector("rect").getAttribute("y")}))`
	consoletest.Run(t, ctx, "racks page",
		chromedp.Navigate(l.url+console.Prefix+"racks"),
		chromedp.WaitVisible(`figure[data-rack="r02"] a.unit[data-machine="db-01"]`),
		chromedp.WaitVisible(`#live-status.on`),
		chromedp.Evaluate(read, &got),
	)
	byName := map[string]placed{}
	for _, p := range got {
		byName[p.Machine] = p
	}
	want := map[string]placed{
		"web-01": {Rack: "r01", Machine: "web-01", Slot: "10", State: "state-provisioning"},
		"web-02": {Rack: "r01", Machine: "web-02", Slot: "12", State: "state-provisioning"},
		"db-01":  {Rack: "r02", Machine: "db-01", Slot: "3", State: "state-provisioning"},
	}
	if diff := cmp.Diff(want, byName, cmpIgnoreY); diff != "" {
		t.Errorf("elevation (-want +got):\n%s", diff)
	}
	// U1 is at the bottom: U12 is drawn above U10, two units higher.
	if a, b := byName["web-02"].Y, byName["web-01"].Y; b-a != 44 {
		t.Errorf("U12 at y=%v, U10 at y=%v: want U12 two units (44) above", a, b)
	}

	// db-01 fails: it turns red in r02 at U3 without a reload.
	consoletest.Run(t, ctx, "mark", chromedp.Evaluate(`window.notReloaded = true`, nil))
	bg := context.Background()
	if _, err := inventory.UpdateMachine(bg, l.Store, "db-01", func(m *inventory.Machine) error {
		m.Power = inventory.PowerOn
		return m.SetState(inventory.StateFailed, "agent: disk write error", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Store.AppendEvent(bg, inventory.Event{Machine: "db-01", Kind: inventory.EventAgent, Message: "agent task t-2: failed: write /dev/vda: input/output error"}); err != nil {
		t.Fatal(err)
	}
	var title string
	var notReloaded bool
	var failedFill string
	sel := `figure[data-rack="r02"] a.unit.state-failed[data-machine="db-01"][data-slot="3"]`
	consoletest.Run(t, ctx, "failed machine live",
		chromedp.WaitVisible(sel),
		chromedp.WaitVisible(`figure[data-rack="r02"].rack-failed`),
		chromedp.Evaluate(`window.notReloaded === true`, &notReloaded),
		chromedp.Poll(`(() => { const t = document.querySelector(`+"`"+sel+" title`"+`); return t && t.textContent.includes("input/output error") ? t.textContent : null })()`, &title, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Evaluate(`getComputedStyle(document.querySelector(`+"`"+sel+" rect`"+`)).fill`, &failedFill),
	)
	if !notReloaded {
		t.Error("the page was reloaded; the change should arrive over the stream")
	}
	for _, s := range []string{"db-01: failed", "power on (seen ", "U3", "input/output error"} {
		if !strings.Contains(title, s) {
			t.Errorf("hover of db-01 = %q, lacks %q", title, s)
		}
	}
	var okFill string
	consoletest.Run(t, ctx, "fill", chromedp.Evaluate(`getComputedStyle(document.querySelector('a.unit[data-machine="web-01"] rect')).fill`, &okFill))
	if failedFill == okFill {
		t.Errorf("the failed machine is filled like the others (%s)", failedFill)
	}
	consoletest.Screenshot(t, ctx, "racks-failed.png")

	var h1 string
	consoletest.Run(t, ctx, "click through",
		chromedp.Click(sel+" rect"),
		chromedp.WaitVisible(`#machine-live`),
		chromedp.Text(`h1`, &h1),
	)
	if h1 != "db-01" {
		t.Errorf("clicking db-01 opened %q", h1)
	}
}

var cmpIgnoreY = cmp.Comparer(func(a, b float64) bool { return true })

// TestRacksWithoutLabels: a site whose machines carry no rack label is
// drawn as one grid.
func TestRacksWithoutLabels(t *testing.T) {
	l := serve(t, true)
	setLabels(t, l.Store, map[string]map[string]string{"web-01": nil, "web-02": nil, "db-01": nil})
	resp, err := http.Get(l.url + console.Prefix + "racks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	page := string(body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-rack="all machines"`) || strings.Count(page, `class="unit `) != 3 {
		t.Errorf("racks page without labels: status %d, want one grid of 3 machines:\n%s", resp.StatusCode, page)
	}
}
