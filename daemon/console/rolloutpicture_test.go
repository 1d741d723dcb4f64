package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/daemon/console/consoletest"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/site"
)

// TestRolloutPictureInChromium: the converge engine rolls a site out to a
// simulated rack (virtual Redfish BMCs, simulated agents) while the
// rollout page is open; its cells fill as machines move through their
// steps, never going back, the failed machine is marked, and the halt
// rule says how close the run came.
func TestRolloutPictureInChromium(t *testing.T) {
	ctx := context.Background()
	store, err := backend.Open(ctx, "file://"+filepath.Join(t.TempDir(), "state.db"), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	fleet, err := applytest.Start(applytest.Options{Machines: 5, Racks: 1, Store: store, AgentTime: time.Second, RebootAfter: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	failing := fleet.Names()[3]
	fleet.FailAgent(failing, "write /dev/vda: input/output error")
	res, diags := site.Load("site.hcl", fleet.SiteHCL("file://state.db", "  canary = 1\n  batch_size = 2\n  max_failures = 1\n  stagger = \"0s\""), site.Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	s := res.Site
	if err := apply.Sync(ctx, store, s); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, console.New(console.Options{Store: store, OpenReads: true, Debounce: 50 * time.Millisecond}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	browser := consoletest.Browser(t)
	engine := apply.New(s, store, apply.Options{
		AgentBoot: apply.AgentBoot{Kernel: "/agent/vmlinuz", Initrds: []string{"/agent/initrd"}, Cmdline: "console=ttyS0"},
		ImageURL:  func(image string) string { return "http://192.0.2.1:8080/images/" + image + "/disk" },
		ReadyURL:  fleet.ReadyURL,
		BMC: apply.DriverBMCs(nil, func(c *bmc.Config) {
			c.Timeout, c.Retries, c.PowerWait = 3*time.Second, 1, 3*time.Second
		}),
		StepTimeout: 5 * time.Second, Retries: 2, RetryDelay: 10 * time.Millisecond,
		AgentTimeout: 20 * time.Second, PollInterval: 50 * time.Millisecond,
	})
	p, err := apply.Plan(ctx, store, s)
	if err != nil {
		t.Fatal(err)
	}
	// The page opens on the first run as soon as it is recorded, and
	// samples its cells whenever they change.
	done := make(chan error, 1)
	go func() {
		_, err := engine.Apply(ctx, p)
		done <- err
	}()
	consoletest.Run(t, browser, "rollout page",
		chromedp.Navigate(srv.URL+console.Prefix+"rollout"),
		chromedp.Poll(`document.querySelectorAll("#rollout-picture a.cell").length === 5`, nil, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)),
		chromedp.Navigate(srv.URL+console.Prefix+"rollout"),
		chromedp.WaitVisible(`#live-status.on`),
		chromedp.Evaluate(`window.samples = []; window.sampler = setInterval(() => {
			const s = [...document.querySelectorAll("#rollout-picture a.cell")].map(a => a.dataset.machine + "=" + a.dataset.fill).join(" ");
			if (window.samples[window.samples.length-1] !== s) window.samples.push(s);
		}, 20)`, nil),
	)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the apply did not finish in 2 minutes")
	}
	var samples []string
	var halt, left string
	consoletest.Run(t, browser, "finished",
		chromedp.Poll(`[...document.querySelectorAll("#rollout-picture a.cell")].every(a => a.dataset.fill === "100")`, nil, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.WaitVisible(`#rollout-picture a.cell.failed[data-machine="`+failing+`"]`),
		chromedp.Evaluate(`clearInterval(window.sampler); window.samples`, &samples),
		consoletest.LiveText(`#halt-rule`, &halt),
		consoletest.LiveText(`#time-left`, &left),
	)
	// Each cell only ever fills; the page showed partly filled cells on
	// the way (a machine between its first and last step).
	last := map[string]int{}
	partial := false
	for _, s := range samples {
		for _, f := range strings.Fields(s) {
			name, pct, _ := strings.Cut(f, "=")
			n := atoi(t, pct)
			if n < last[name] {
				t.Errorf("cell %s went back from %d%% to %d%% (samples %q)", name, last[name], n, samples)
			}
			last[name] = n
			partial = partial || (n > 0 && n < 100)
		}
	}
	if !partial || len(samples) < 3 {
		t.Errorf("the picture never showed a machine part way (%d samples: %q)", len(samples), samples)
	}
	if !strings.Contains(halt, "1 failed of 1 allowed; the run halts at 2 (max_failures = 1)") {
		t.Errorf("halt rule says %q", halt)
	}
	if !strings.Contains(left, "finished") {
		t.Errorf("time left says %q after the run", left)
	}
	consoletest.Screenshot(t, browser, "rollout-picture.png")
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int(r-'0')
	}
	return n
}
