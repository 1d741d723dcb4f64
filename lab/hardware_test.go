package lab_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/lab"
)

// hardwareAsCode is hardware as code on a provisioned lab, as an operator
// does it: the site file's hardware lines are taken in (lab.HardwareMark
// deleted), `metal plan` reads vm-2's virtual BMC and shows a BIOS change
// and a firmware update, in place; `metal lab apply` has the BMC pull the
// firmware from metal serve's HTTP server, stages the BIOS setting and
// resets the VM to apply it; the next plan is empty: what the BMC reports
// is what the site declares. vm-1, behind IPMI, declares none.
func hardwareAsCode(t *testing.T, ctx context.Context, st *lab.State, metal string) {
	t.Helper()
	b, err := os.ReadFile(st.Site)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), lab.HardwareMark) {
		t.Fatalf("the lab's site file has no hardware lines (%q):\n%s", lab.HardwareMark, b)
	}
	if err := os.WriteFile(st.Site, []byte(strings.ReplaceAll(string(b), lab.HardwareMark, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	planJSON := func() *plan.Plan {
		t.Helper()
		out, err := inLab(ctx, st, metal, "plan", "--json", "--site", st.Site)
		if err != nil {
			t.Fatalf("metal plan: %v\n%s", err, out)
		}
		var p plan.Plan
		// metal's log lines, if any, go before the JSON.
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &p); err != nil {
			t.Fatalf("metal plan --json: %v\n%s", err, out)
		}
		return &p
	}

	p := planJSON()
	human, _ := inLab(ctx, st, metal, "plan", "--no-color", "--site", st.Site)
	t.Logf("metal plan with the hardware lines:\n%s", human)
	type attr struct{ Name, Before, After string }
	var got []attr
	for _, c := range p.Changes {
		if c.Machine != "vm-2" {
			if c.Action != plan.NoOp {
				t.Errorf("%s: %s, want no change", c.Machine, c.Action)
			}
			continue
		}
		if c.Action != plan.Update {
			t.Errorf("vm-2: %s, want update in place", c.Action)
		}
		for _, a := range c.Attrs {
			got = append(got, attr{a.Name, text(a.Before), text(a.After)})
		}
	}
	want := []attr{
		{plan.BIOSPrefix + lab.BIOSAttribute, "Disabled", lab.BIOSValue},
		{plan.FirmwarePrefix + lab.FirmwareComponent, "1.16.2", lab.FirmwareVersion},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("vm-2's changes (-want +got):\n%s\n%s", diff, human)
	}
	for _, f := range p.Findings {
		if f.Machine == "vm-2" {
			t.Errorf("finding: %+v", f)
		}
	}

	out, err := groupCommand(ctx, metal, "lab", "apply", "--dir", st.Dir).CombinedOutput()
	if err != nil {
		t.Fatalf("metal lab apply of the hardware: %v\n%s\nvbmc log:\n%s", err, out, tailFile(filepath.Join(st.Dir, "logs", "vbmc.log")))
	}
	t.Logf("metal lab apply of the hardware:\n%s", out)

	if p := planJSON(); p.HasChanges() || hardwareFindings(p) {
		human, _ := inLab(ctx, st, metal, "plan", "--no-color", "--site", st.Site)
		t.Errorf("the plan after apply is not empty:\n%s", human)
	}
	// In place: vm-2 was not reinstalled.
	show, err := inLab(ctx, st, metal, "machines", "show", "--site", st.Site, "vm-2")
	if err != nil {
		t.Fatalf("metal machines show vm-2: %v\n%s", err, show)
	}
	for _, w := range []string{"provisioned", "bios: in effect after reset"} {
		if !strings.Contains(show, w) {
			t.Errorf("vm-2's record does not say %q:\n%s", w, show)
		}
	}
}

func text(v *plan.Value) string {
	if v == nil {
		return "(none)"
	}
	return v.Text
}

// hardwareFindings reports whether p says anything of vm-2's BIOS or
// firmware (drift, a value refused, a BMC not read).
func hardwareFindings(p *plan.Plan) bool {
	for _, f := range p.Findings {
		if f.Machine == "vm-2" && (strings.Contains(f.Message, "bios") || strings.Contains(f.Message, "BIOS") || strings.Contains(f.Message, "firmware")) {
			return true
		}
	}
	return false
}
