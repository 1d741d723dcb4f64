package apply_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

func biosSite(l *lab, hw string) *site.Site {
	return l.site("", func(src string) string {
		return strings.ReplaceAll(src, "image   = image.os\n", "image   = image.os\n"+hw+"\n")
	})
}

func (l *lab) planHW(ctx context.Context, s *site.Site) *plan.Plan {
	l.t.Helper()
	p, err := apply.PlanHardware(ctx, l.store, s, l.bmcs())
	if err != nil {
		l.t.Fatal(err)
	}
	return p
}

// applyHW applies the plan of s with its hardware observed from the BMCs,
// as metal plan and metal apply compute it.
func (l *lab) applyHW(ctx context.Context, s *site.Site) apply.Result {
	l.t.Helper()
	res, err := l.engine(s, nil).Apply(ctx, l.planHW(ctx, s))
	if err != nil {
		l.t.Fatal(err)
	}
	return res
}

func (l *lab) bmcs() apply.BMCFunc {
	return apply.DriverBMCs(nil, func(c *bmc.Config) { c.Timeout, c.Retries, c.PowerWait = 3*time.Second, 1, 3*time.Second })
}

// TestBIOSPlanApplyPlan provisions machines with BIOS settings (applied
// before the install), changes one setting for the rack (planned against
// what each virtual BMC reports, applied in place: staged, reset, read
// back), and finds the second plan empty. m0001 holds the new value
// pending already, as after a run killed between the PATCH and the
// reset: it is reset, not patched again.
func TestBIOSPlanApplyPlan(t *testing.T) {
	l := newLab(t, 2, 1, 0)
	ctx := ctxT(t, 60*time.Second)
	s := biosSite(l, `  boot_mode = "legacy"
  bios    = { ProcVirtualization = "Enabled", PxeRetries = 3 }`)
	p := l.planHW(ctx, s)
	if p.Summary != (plan.Summary{Create: 2}) {
		t.Fatalf("first plan: %+v", p.Summary)
	}
	if res := l.applyHW(ctx, s); res.State != inventory.RunDone {
		t.Fatalf("apply: %+v", res)
	}
	for _, n := range []string{"m0000", "m0001"} {
		attrs, pending, patches := l.fleet.BMC(n).BIOS(n)
		if attrs["BootMode"] != "LegacyBios" || attrs["ProcVirtualization"] != "Enabled" || attrs["PxeRetries"] != int64(3) || len(pending) != 0 || patches != 1 {
			t.Errorf("%s after provision: attrs %v, pending %v, %d patches", n, attrs, pending, patches)
		}
	}
	if p := l.planHW(ctx, s); p.HasChanges() || len(p.Findings) > 0 {
		t.Fatalf("plan after apply: %+v", p)
	}

	// Someone changed m0000's BIOS by hand: the plan sees it.
	hand, err := bmc.New(bmc.Config{Machine: "m0000", Protocol: "redfish", Address: l.fleet.Addr("m0000"), Username: applytest.User, Password: applytest.Password}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := hand.SetBIOS(ctx, map[string]string{"PxeRetries": "7"}); err != nil {
		t.Fatal(err)
	}
	if err := hand.Power(ctx, bmc.ActionReset); err != nil {
		t.Fatal(err)
	}
	// m0001 was staged the next setting by a run that died before its reset.
	staged, err := bmc.New(bmc.Config{Machine: "m0001", Protocol: "redfish", Address: l.fleet.Addr("m0001"), Username: applytest.User, Password: applytest.Password}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := staged.SetBIOS(ctx, map[string]string{"WorkloadProfile": "Performance"}); err != nil {
		t.Fatal(err)
	}

	s2 := biosSite(l, `  boot_mode = "legacy"
  bios    = { ProcVirtualization = "Enabled", PxeRetries = 3, WorkloadProfile = "Performance" }`)
	p = l.planHW(ctx, s2)
	if p.Summary != (plan.Summary{Update: 2}) {
		t.Fatalf("plan of the change: %+v", p)
	}
	// The hand change is drift (metal applied 3); m0001's staged value
	// is not.
	if len(p.Findings) != 1 || p.Findings[0].Machine != "m0000" || !strings.Contains(p.Findings[0].Message, `drift: bios.PxeRetries is "7" on the BMC; metal applied "3"`) {
		t.Errorf("findings: %+v", p.Findings)
	}
	got := map[string]string{}
	for _, c := range p.Changes {
		for _, a := range c.Attrs {
			b := "<nil>"
			if a.Before != nil {
				b = a.Before.Text + "|" + a.Before.Pending
			}
			got[c.Machine+" "+a.Name] = b + " -> " + a.After.Text
		}
	}
	want := map[string]string{
		"m0000 bios.PxeRetries":      "7| -> 3",
		"m0000 bios.WorkloadProfile": "Balanced| -> Performance",
		"m0001 bios.WorkloadProfile": "Balanced|Performance -> Performance",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("plan %s: %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("plan changes %v, want %v", got, want)
	}
	installs := l.fleet.Installs()
	if res := l.applyHW(ctx, s2); res.State != inventory.RunDone {
		t.Fatalf("apply: %+v", res)
	}
	if d := l.fleet.Installs(); d["m0000"] != installs["m0000"] || d["m0001"] != installs["m0001"] {
		t.Errorf("a BIOS change reinstalled: before %v after %v", installs, d)
	}
	for n, wantPatches := range map[string]int{"m0000": 3, "m0001": 2} {
		attrs, pending, patches := l.fleet.BMC(n).BIOS(n)
		if attrs["WorkloadProfile"] != "Performance" || attrs["PxeRetries"] != int64(3) || len(pending) != 0 || patches != wantPatches {
			t.Errorf("%s after update: attrs %v, pending %v, %d patches (want %d)", n, attrs, pending, patches, wantPatches)
		}
	}
	if p := l.planHW(ctx, s2); p.HasChanges() || len(p.Findings) > 0 {
		t.Fatalf("plan after the update: %+v", p)
	}
}

// TestBIOSValueTheBMCRefuses: a value the BMC's registry does not allow is
// a plan finding, and applying it fails that machine with the BMC's
// reason, never anything worse.
func TestBIOSValueTheBMCRefuses(t *testing.T) {
	l := newLab(t, 1, 1, 0)
	ctx := ctxT(t, 30*time.Second)
	s := l.site("", nil)
	if res := l.apply(ctx, l.engine(s, nil), s); res.State != inventory.RunDone {
		t.Fatalf("apply: %+v", res)
	}
	s2 := biosSite(l, `  bios = { ProcVirtualization = "Maybe" }`)
	p := l.planHW(ctx, s2)
	if len(p.Findings) != 1 || !strings.Contains(p.Findings[0].Message, "must be one of Enabled, Disabled") {
		t.Errorf("findings: %+v", p.Findings)
	}
	res, err := l.engine(s2, nil).Apply(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if res.State == inventory.RunDone || !strings.Contains(res.Errors["m0000"], "must be one of Enabled, Disabled") {
		t.Errorf("apply of a refused value: %+v", res)
	}
}
