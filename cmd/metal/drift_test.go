package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/converge/apply/applytest"
)

// TestApplyThroughServeRevertsBIOSDrift: machines provisioned with BIOS
// settings through a running `metal serve`; someone changes one on a
// machine's BMC by hand (Redfish: the settings PATCH and the reset that
// applies it). `metal plan` shows the drift and the change that sets it
// back; a plan saved before the drift is refused as stale, naming the
// setting and its two values; `metal apply` handed to metal serve reverts
// it in place (no reinstall), and the next plan is empty.
func TestApplyThroughServeRevertsBIOSDrift(t *testing.T) {
	l := newServeLabEdit(t, 2, 50*time.Millisecond, testRollout, func(s string) string {
		return strings.ReplaceAll(s, "image   = image.os\n", "image   = image.os\n  bios    = { ProcVirtualization = \"Enabled\", PxeRetries = 3 }\n")
	})
	apply := func(args ...string) (int, string, string) {
		t.Helper()
		return metal(t, nil, append(append([]string{"apply"}, args...), applyTimeouts...)...)
	}
	if code, stdout, stderr := apply("--auto-approve", l.site); code != 0 || !strings.Contains(stderr, "the apply runs there") {
		t.Fatalf("provision through metal serve: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := metal(t, nil, "plan", "--detailed-exitcode", l.site); code != 0 {
		t.Fatalf("plan after provisioning: exit %d\n%s%s", code, stdout, stderr)
	}
	saved := filepath.Join(l.dir, "before-drift.json")
	if code, stdout, stderr := metal(t, nil, "plan", "--out", saved, l.site); code != 0 {
		t.Fatalf("plan --out: exit %d\n%s%s", code, stdout, stderr)
	}
	installs := l.fleet.Installs()

	// By hand, on m0000's BMC.
	redfishBIOSDrift(t, l.fleet.Addr("m0000"), "m0000", map[string]any{"PxeRetries": 7})
	if attrs, pending, _ := l.fleet.BMC("m0000").BIOS("m0000"); attrs["PxeRetries"] != int64(7) || len(pending) != 0 {
		t.Fatalf("the hand change did not take: attrs %v, pending %v", attrs, pending)
	}

	code, stdout, stderr := metal(t, nil, "plan", "--detailed-exitcode", "--no-color", l.site)
	if code != exitChanges || !strings.Contains(stdout, `drift: bios.PxeRetries is "7" on the BMC; metal applied "3"`) ||
		!strings.Contains(stdout, "bios.PxeRetries") || !strings.Contains(stdout, "1 to update") {
		t.Fatalf("plan after the drift: exit %d\n%s%s", code, stdout, stderr)
	}

	// The plan saved before the drift is not what applying it would do now.
	code, stdout, stderr = apply(saved)
	if code != exitFailed || !strings.Contains(stderr, "is stale") ||
		!strings.Contains(stderr, `m0000 bios.PxeRetries: "3" when planned, "7" now on its BMC`) || !strings.Contains(stderr, "metal plan --out") {
		t.Fatalf("apply of the plan saved before the drift: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, _, patches := l.fleet.BMC("m0000").BIOS("m0000"); patches != 2 {
		t.Errorf("the stale plan touched the BMC: %d BIOS patches, want 2 (metal's, by hand)", patches)
	}

	code, stdout, stderr = apply("--auto-approve", l.site)
	if code != 0 || !strings.Contains(stderr, "the apply runs there") || !strings.Contains(stdout, "1 done, 0 failed") {
		t.Fatalf("apply through metal serve: exit %d\n%s%s", code, stdout, stderr)
	}
	attrs, pending, patches := l.fleet.BMC("m0000").BIOS("m0000")
	if attrs["PxeRetries"] != int64(3) || attrs["ProcVirtualization"] != "Enabled" || len(pending) != 0 || patches != 3 {
		t.Errorf("m0000's BIOS after the apply: attrs %v, pending %v, %d patches (want PxeRetries 3, 3 patches)", attrs, pending, patches)
	}
	if _, _, patches := l.fleet.BMC("m0001").BIOS("m0001"); patches != 1 {
		t.Errorf("m0001, which did not drift, was patched again: %d patches", patches)
	}
	if got := l.fleet.Installs(); got["m0000"] != installs["m0000"] || got["m0001"] != installs["m0001"] {
		t.Errorf("setting back a BIOS value reinstalled: before %v, after %v", installs, got)
	}
	if code, stdout, stderr := metal(t, nil, "plan", "--detailed-exitcode", "--no-color", l.site); code != 0 || strings.Contains(stdout, "drift") {
		t.Errorf("plan after the apply: exit %d, want 0 and no drift\n%s%s", code, stdout, stderr)
	}
}

// redfishBIOSDrift changes BIOS attributes of system id at a Redfish BMC
// as an operator would by hand: stage them (PATCH Bios/Settings), then
// restart the machine so they take effect.
func redfishBIOSDrift(t *testing.T, base, id string, attrs map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, req := range []struct {
		method, path string
		body         any
	}{
		{http.MethodPatch, "/redfish/v1/Systems/" + id + "/Bios/Settings", map[string]any{"Attributes": attrs}},
		{http.MethodPost, "/redfish/v1/Systems/" + id + "/Actions/ComputerSystem.Reset", map[string]string{"ResetType": "ForceRestart"}},
	} {
		b, err := json.Marshal(req.body)
		if err != nil {
			t.Fatal(err)
		}
		r, err := http.NewRequestWithContext(ctx, req.method, base+req.path, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r.SetBasicAuth(applytest.User, applytest.Password)
		r.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %s", req.method, req.path, resp.Status)
		}
	}
}
