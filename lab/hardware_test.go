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
	if t.Failed() {
		return
	}

	// Someone sets the BIOS value back by hand on vm-2's BMC (Redfish:
	// stage it, reset the VM). metal plan shows the drift and the change
	// that undoes it; metal lab apply, handed to the lab's metal serve,
	// carries it out; the next plan is empty again.
	driftBIOS(t, ctx, st, "vm-2", lab.BIOSAttribute, "Disabled")
	p = planJSON()
	got = nil
	for _, c := range p.Changes {
		if c.Machine == "vm-2" {
			for _, a := range c.Attrs {
				got = append(got, attr{a.Name, text(a.Before), text(a.After)})
			}
		}
	}
	if diff := cmp.Diff([]attr{{plan.BIOSPrefix + lab.BIOSAttribute, "Disabled", lab.BIOSValue}}, got); diff != "" || !hardwareFindings(p) {
		human, _ := inLab(ctx, st, metal, "plan", "--no-color", "--site", st.Site)
		t.Fatalf("the plan after the drift (-want +got):\n%s\n%s", diff, human)
	}
	out, err = groupCommand(ctx, metal, "lab", "apply", "--dir", st.Dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the apply runs there") {
		t.Fatalf("metal lab apply of the drift: %v\n%s\nvbmc log:\n%s", err, out, tailFile(filepath.Join(st.Dir, "logs", "vbmc.log")))
	}
	t.Logf("metal lab apply after the drift:\n%s", out)
	if p := planJSON(); p.HasChanges() || hardwareFindings(p) {
		human, _ := inLab(ctx, st, metal, "plan", "--no-color", "--site", st.Site)
		t.Errorf("the plan after setting the drift back is not empty:\n%s", human)
	}
}

// driftBIOS changes a BIOS attribute of vm on its virtual BMC as an
// operator would by hand, with curl inside the lab: stage it (PATCH
// Bios/Settings), then restart the VM so it takes effect.
func driftBIOS(t *testing.T, ctx context.Context, st *lab.State, vm, name, value string) {
	t.Helper()
	var bmcURL string
	for _, v := range st.VMs {
		if v.Name == vm {
			bmcURL = v.BMCAddress
		}
	}
	pw, err := os.ReadFile(filepath.Join(st.Dir, "bmc-password"))
	if err != nil {
		t.Fatal(err)
	}
	patch, _ := json.Marshal(map[string]any{"Attributes": map[string]string{name: value}})
	for _, req := range [][]string{
		{"PATCH", "/Bios/Settings", string(patch)},
		{"POST", "/Actions/ComputerSystem.Reset", `{"ResetType": "ForceRestart"}`},
	} {
		out, err := inLab(ctx, st, "curl", "-sS", "--fail-with-body", "-u", st.Username+":"+string(pw), "-X", req[0],
			"-H", "Content-Type: application/json", "-d", req[2], bmcURL+"/redfish/v1/Systems/"+vm+req[1])
		if err != nil {
			t.Fatalf("%s %s on %s's BMC: %v\n%s", req[0], req[1], vm, err, out)
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
