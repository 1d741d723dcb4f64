package console_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/daemon/console/consoletest"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// destructivePlan is a plan with one change of each kind.
type destructivePlan struct{}

func (destructivePlan) Plan(context.Context) (*plan.Plan, error) {
	v := func(s string) *plan.Value { return &plan.Value{Text: s} }
	return &plan.Plan{Site: "testlab", Digest: "sha256:test", Changes: []plan.Change{
		{Machine: "db-01", Action: plan.Replace, Attrs: []plan.AttrChange{{Name: "image", Before: v("debian-11"), After: v("debian-12"), ForcesReplace: true}}},
		{Machine: "web-01", Action: plan.Update, Attrs: []plan.AttrChange{{Name: "labels.role", Before: v("web"), After: v("api")}}},
		{Machine: "web-02", Action: plan.Delete, Attrs: []plan.AttrChange{{Name: "ip", Before: v("192.0.2.12")}}},
		{Machine: "web-03", Action: plan.Create, Attrs: []plan.AttrChange{{Name: "ip", After: v("192.0.2.13")}}},
	}, Summary: plan.Summary{Create: 1, Update: 1, Replace: 1, Delete: 1}}, nil
}

// TestPlanAndAdoptInChromium: the plan page marks each change as
// Terraform does (+ ~ -/+ -, green, yellow, red), calls out the changes
// that destroy a disk, and lists discovered machines, whose adopt page
// gives a machine block that the site loads once pasted in.
func TestPlanAndAdoptInChromium(t *testing.T) {
	l := serve(t, true, func(o *console.Options) {
		o.Planner = destructivePlan{}
	})
	found := inventory.Machine{Name: "m-525400aabb01", MAC: "52:54:00:aa:bb:01", State: inventory.StateDiscovered,
		Hardware: &inventory.Hardware{CPU: inventory.CPU{Cores: 8}, MemoryBytes: 16 << 30, DMI: inventory.DMI{Vendor: "Dell Inc.", Product: "PowerEdge R650", Serial: "7XK2Q53"},
			Disks: []inventory.Disk{{Name: "nvme0n1", SizeBytes: 960 << 30}}}}
	if _, err := l.Store.PutMachine(context.Background(), found); err != nil {
		t.Fatal(err)
	}
	ctx := consoletest.Browser(t)
	var syms, called []string
	var colors map[string]string
	consoletest.Run(t, ctx, "plan page",
		chromedp.Navigate(l.url+console.Prefix+"plan"),
		chromedp.WaitVisible(`#destructive`),
		chromedp.Evaluate(`[...document.querySelectorAll(".change")].map(c => c.dataset.machine + " " + c.querySelector("p:nth-of-type(2) .sym").textContent)`, &syms),
		chromedp.Evaluate(`[...document.querySelectorAll("#destructive li")].map(li => li.textContent.trim())`, &called),
		chromedp.Evaluate(`Object.fromEntries(["create","update","replace","delete"].map(a => [a, getComputedStyle(document.querySelector(".change-" + a + " .sym")).color]))`, &colors),
	)
	consoletest.Screenshot(t, ctx, "plan.png")
	if got, want := strings.Join(syms, ", "), "db-01 -/+, web-01 ~, web-02 -, web-03 +"; got != want {
		t.Errorf("symbols: %s, want %s", got, want)
	}
	if len(called) != 2 || !strings.Contains(called[0], "db-01: reprovisioned") || !strings.Contains(called[1], "web-02: deprovisioned") {
		t.Errorf("destructive changes called out: %q", called)
	}
	if colors["create"] == colors["update"] || colors["update"] == colors["replace"] || colors["replace"] != colors["delete"] {
		t.Errorf("colors: %v; want create, update and the destructive two apart, the destructive alike", colors)
	}

	var hcl string
	consoletest.Run(t, ctx, "adopt",
		chromedp.Click(`#discovered a.button`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#adopt-hcl`),
		chromedp.Text(`#adopt-hcl`, &hcl),
		// The copy button's handler is attached by live.js; a click before
		// the page has loaded it does nothing, so wait for the load first.
		chromedp.Poll(`document.readyState === "complete"`, nil, chromedp.WithPollingTimeout(30*time.Second)),
		chromedp.Click(`#copy`),
		chromedp.Poll(`document.getElementById("copy-status").textContent !== ""`, nil, chromedp.WithPollingTimeout(30*time.Second)),
	)
	consoletest.Screenshot(t, ctx, "adopt.png")
	for _, s := range []string{`machine "m-525400aabb01" {`, `mac     = "52:54:00:aa:bb:01"`, "PowerEdge R650", "serial 7XK2Q53", "image   = image.debian-12"} {
		if !strings.Contains(hcl, s) {
			t.Errorf("adopt block lacks %q:\n%s", s, hcl)
		}
	}
	// Pasted into the site file, the block loads: the machine is declared.
	src, err := os.ReadFile("../api/testdata/site.hcl")
	if err != nil {
		t.Fatal(err)
	}
	res, diags := site.Load("site.hcl", append(src, "\n"+hcl...), site.Options{})
	if diags.HasErrors() {
		t.Fatalf("the site with the adopted block does not load: %s", diags.Error())
	}
	declared := false
	for _, m := range res.Site.Machines {
		declared = declared || m.Name == "m-525400aabb01"
	}
	if !declared {
		t.Error("the adopted machine is not in the loaded site")
	}
}
