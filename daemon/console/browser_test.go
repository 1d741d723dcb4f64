package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/api/apitest"
	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/daemon/console/consoletest"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

type lab struct {
	*apitest.Lab
	actions *apitest.Actions
	url     string
	token   string
}

// serve runs the console (and the API beside it, as the daemon mounts
// them) on a loopback port over a seeded bbolt store.
func serve(t *testing.T, openReads bool, tweak ...func(*console.Options)) *lab {
	t.Helper()
	l := apitest.New(t, "../api/testdata/site.hcl")
	l.Seed(t)
	secret := apitest.Token(t, l.Store, "ops", api.RoleOperate)
	acts := &apitest.Actions{Store: l.Store}
	verifier := api.NewTokens(l.Store, nil, nil)
	mux := http.NewServeMux()
	opts := console.Options{
		Store: l.Store, Actions: acts, Planner: apitest.Planner{Site: l.Site}, Tokens: verifier,
		OpenReads: openReads, Debounce: 50 * time.Millisecond, Site: func() *site.Site { return l.Site },
	}
	for _, f := range tweak {
		f(&opts)
	}
	mux.Handle(console.Prefix, console.New(opts))
	mux.Handle(api.Prefix, api.New(api.Options{Store: l.Store, Actions: acts, Tokens: verifier, OpenReads: openReads}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &lab{Lab: l, actions: acts, url: srv.URL, token: secret}
}

func TestConsoleInChromium(t *testing.T) {
	l := serve(t, true)
	ctx := consoletest.Browser(t)
	bg := context.Background()

	// The machines of the store are listed, readable as served.
	var names []string
	consoletest.Run(t, ctx, "machines page",
		chromedp.Navigate(l.url+console.Prefix),
		chromedp.WaitVisible(`#machine-rows tr[data-machine="db-01"]`),
		chromedp.Evaluate(`[...document.querySelectorAll("#machine-rows tr[data-machine]")].map(tr => tr.dataset.machine + " " + tr.cells[1].textContent + " " + tr.cells[5].textContent.trim())`, &names),
	)
	want := []string{"db-01 r02 provisioning", "web-01 r01 provisioning", "web-02 r01 provisioning"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("machines listed (-want +got):\n%s", diff)
	}
	consoletest.Screenshot(t, ctx, "machines.png")

	// A change written to the store appears without a reload.
	consoletest.Run(t, ctx, "wait for the live stream",
		chromedp.WaitVisible(`#live-status.on`),
		chromedp.Evaluate(`window.notReloaded = true`, nil),
	)
	m, err := l.Store.Machine(bg, "db-01")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetState(inventory.StateFailed, "agent: checksum mismatch", time.Now()); err != nil {
		t.Fatal(err)
	}
	m.Power = inventory.PowerOff
	if _, err := l.Store.PutMachine(bg, m); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Store.AppendEvent(bg, inventory.Event{Machine: "db-01", Kind: inventory.EventAgent, Message: "checksum mismatch"}); err != nil {
		t.Fatal(err)
	}
	var notReloaded bool
	var last string
	consoletest.Run(t, ctx, "live update",
		chromedp.WaitVisible(`#machine-rows tr[data-machine="db-01"] .state-failed`),
		chromedp.WaitVisible(`#machine-rows tr[data-machine="db-01"] td.power-off`),
		// The event is a write of its own after the machine's: a render
		// may come between the two.
		chromedp.Poll(`(() => { const e = document.querySelector('#machine-rows tr[data-machine="db-01"] td.last'); return e && e.innerText.includes("checksum mismatch") })()`, nil, chromedp.WithPollingTimeout(10*time.Second)),
		consoletest.LiveText(`#machine-rows tr[data-machine="db-01"] td.last`, &last),
		chromedp.Evaluate(`window.notReloaded === true`, &notReloaded),
	)
	if !notReloaded {
		t.Error("the page was reloaded; the change should arrive over the stream")
	}
	if !strings.Contains(last, "checksum mismatch") {
		t.Errorf("last event of db-01 = %q, want the new agent event", last)
	}
	consoletest.Screenshot(t, ctx, "machines-live.png")

	// Typing in the filter narrows the table at once.
	var visible int
	consoletest.Run(t, ctx, "filter",
		chromedp.SendKeys(`#filter`, "r02"),
		chromedp.Evaluate(`[...document.querySelectorAll("#machine-rows tr[data-machine]")].filter(tr => !tr.hidden).length`, &visible),
	)
	if visible != 1 {
		t.Errorf("%d rows visible after filtering by rack r02, want 1", visible)
	}

	// An action without a login is refused: the confirm page asks to
	// log in, and a POST anyway is refused and reaches nothing.
	var needLogin string
	consoletest.Run(t, ctx, "confirm without login",
		chromedp.Navigate(l.url+console.Prefix+"machines/web-01"),
		chromedp.Click(`a[href*="action=power-cycle"]`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#need-login`),
		chromedp.Text(`#need-login`, &needLogin),
	)
	if !strings.Contains(needLogin, "Log in") {
		t.Errorf("confirm page without login says %q", needLogin)
	}
	if status := consoletest.Post(t, ctx, console.Prefix+"actions", "action=power-cycle&machine=web-01"); status != http.StatusForbidden {
		t.Errorf("action without login: status %d, want 403", status)
	}
	if calls := l.actions.Calls(); len(calls) != 0 {
		t.Fatalf("actions carried out without a login: %v", calls)
	}

	// A wrong token does not log in.
	var loginErr string
	consoletest.Run(t, ctx, "wrong token",
		chromedp.Click(`#need-login a`),
		chromedp.WaitVisible(`#token`),
		chromedp.SendKeys(`#token`, "metal_not-a-token"),
		chromedp.Click(`#login`),
		chromedp.WaitVisible(`.problem[role=alert]`),
		chromedp.Text(`.problem[role=alert]`, &loginErr),
	)
	if !strings.Contains(loginErr, "not valid") {
		t.Errorf("wrong token: %q", loginErr)
	}

	// With the token: log in, confirm, and the action is carried out and
	// recorded, and shows on the machine's timeline.
	var flash, timeline string
	consoletest.Run(t, ctx, "log in and power cycle",
		chromedp.SendKeys(`#token`, l.token),
		chromedp.Click(`#login`),
		chromedp.WaitVisible(`#confirm`), // back to the confirm page it came from
		chromedp.SendKeys(`#reason`, "stuck in POST"),
		chromedp.Click(`#confirm`),
		chromedp.WaitVisible(`.flash`),
		chromedp.Text(`.flash`, &flash),
		consoletest.LiveText(`#timeline`, &timeline),
	)
	if !strings.Contains(flash, `Done: power-cycle of machine web-01 by "ops" (reason: stuck in POST)`) {
		t.Errorf("flash = %q", flash)
	}
	if !strings.Contains(timeline, "power-cycle of machine web-01") {
		t.Errorf("timeline does not show the action:\n%s", timeline)
	}
	if diff := cmp.Diff([]string{"power-cycle web-01"}, l.actions.Calls()); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	evs, err := l.Store.Events(bg, inventory.EventQuery{Machine: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	if e := evs[len(evs)-1]; e.Kind != api.EventAction {
		t.Errorf("last event of web-01 = %+v, want the action", e)
	}
	consoletest.Screenshot(t, ctx, "machine.png")

	// Logged in, a form without the session's CSRF token is refused.
	if status := consoletest.Post(t, ctx, console.Prefix+"actions", "action=reprovision&machine=web-01"); status != http.StatusForbidden {
		t.Errorf("action without CSRF token: status %d, want 403", status)
	}
	if n := len(l.actions.Calls()); n != 1 {
		t.Errorf("%d actions after a forged form, want 1", n)
	}

	// The rollout: canary, batches, the failed step; halting it records
	// the reason, live.
	var rollout string
	consoletest.Run(t, ctx, "rollout",
		chromedp.Navigate(l.url+console.Prefix+"rollout"),
		chromedp.WaitVisible(`#rollout-live .batch`),
		consoletest.LiveText(`#rollout-live`, &rollout),
	)
	for _, s := range []string{"Canary", "Batch 2", "checksum mismatch", "1 failed", "canary of 1, then batches of 2"} {
		if !strings.Contains(rollout, s) {
			t.Errorf("rollout page lacks %q:\n%s", s, rollout)
		}
	}
	consoletest.Screenshot(t, ctx, "rollout.png")
	var halt string
	consoletest.Run(t, ctx, "halt",
		chromedp.Click(`a[href*="action=halt"]`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#confirm`),
		chromedp.Click(`#confirm`),
		chromedp.WaitVisible(`#halt-reason`),
		consoletest.LiveText(`#halt-reason`, &halt),
	)
	if halt != "halted by an operator" {
		t.Errorf("halt reason = %q", halt)
	}

	// The plan reads like `metal plan`.
	var planText string
	consoletest.Run(t, ctx, "plan",
		chromedp.Navigate(l.url+console.Prefix+"plan"),
		chromedp.WaitVisible(`.summary`),
		chromedp.Text(`main`, &planText),
	)
	for _, s := range []string{`+ machine “db-01” {`, `+ ip = "192.0.2.21"`, "Plan: 3 to provision, 0 to update, 0 to reprovision, 0 to deprovision."} {
		if !strings.Contains(planText, s) {
			t.Errorf("plan page lacks %q:\n%s", s, planText)
		}
	}

	// On a phone: the table keeps its essential columns and fits.
	var width int
	consoletest.Run(t, ctx, "phone",
		emulation.SetDeviceMetricsOverride(390, 844, 3, true),
		chromedp.Navigate(l.url+console.Prefix),
		chromedp.WaitVisible(`#machine-rows tr[data-machine="web-01"]`),
		chromedp.Evaluate(`Math.max(document.documentElement.scrollWidth, document.querySelector("table.machines").scrollWidth)`, &width),
	)
	if width > 390 {
		t.Errorf("machines table is %d px wide on a 390 px phone", width)
	}
	consoletest.Screenshot(t, ctx, "machines-phone.png")
}

// TestConsoleClosedReadsNeedLogin: without open reads every page sends
// the browser to log in first, and brings it back after.
func TestConsoleClosedReadsNeedLogin(t *testing.T) {
	l := serve(t, false)
	ctx := consoletest.Browser(t)
	var loc string
	consoletest.Run(t, ctx, "closed console",
		chromedp.Navigate(l.url+console.Prefix+"machines/db-01"),
		chromedp.WaitVisible(`#token`),
		chromedp.Location(&loc),
	)
	if !strings.Contains(loc, "/console/login?next=") {
		t.Errorf("location %q, want the login page", loc)
	}
	var h1 string
	consoletest.Run(t, ctx, "log in",
		chromedp.SendKeys(`#token`, l.token),
		chromedp.Click(`#login`),
		chromedp.WaitVisible(`#machine-live`),
		chromedp.Text(`h1`, &h1),
	)
	if h1 != "db-01" {
		t.Errorf("after login the page is %q, want db-01", h1)
	}
}
