package lab_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/lab"
)

// TestLabCanaryHalts is readiness gating the rollout, in QEMU: the lab's
// image is written and verified on the canary, but its kernel panics at
// boot, so it never phones home. The canary is failed once the image's
// ready_timeout passes, with the cause and its console's last lines; the
// rollout halts, and the other VM is never started. (TestLab is the good
// image: a VM is provisioned only once its OS phoned home.)
func TestLabCanaryHalts(t *testing.T) {
	requireLab(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := labDir(t)
	metal := buildMetal(t)
	st := upLabWith(t, ctx, lab.Config{Dir: dir, Machines: 2, UEFI: 1, Metal: metal,
		BuildImage: lab.BuildPanickingImage, Canary: 1, OSReadyTimeout: "90s"})

	start := time.Now()
	out, err := groupCommand(ctx, metal, "lab", "apply", "--dir", dir).CombinedOutput()
	if err == nil {
		t.Fatalf("metal lab apply succeeded with an image that cannot boot:\n%s\n%s", out, serialLogs(st))
	}
	t.Logf("metal lab apply failed after %s, as it should:\n%s", time.Since(start).Round(time.Second), out)
	if !strings.Contains(string(out), "canary") {
		t.Errorf("the apply's output does not say the canary halted the rollout:\n%s", out)
	}

	st, err = lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.StopServe(); err != nil {
		t.Fatal(err)
	}
	var vm1, vm2 lab.VMStatus
	for _, vm := range st.Status(ctx).VMs {
		switch vm.Name {
		case "vm-1":
			vm1 = vm
		case "vm-2":
			vm2 = vm
		}
	}
	if vm1.State != string(inventory.StateFailed) {
		t.Errorf("the canary vm-1 is %q, want failed", vm1.State)
	}
	if vm2.State == string(inventory.StateProvisioning) || vm2.State == string(inventory.StateProvisioned) || vm2.State == string(inventory.StateFailed) {
		t.Errorf("vm-2 is %q: it was started after the canary failed", vm2.State)
	}
	if b, _ := os.ReadFile(st.VMs[1].Serial); len(b) > 0 {
		t.Errorf("vm-2 printed on its console: it was powered on after the canary failed:\n%s", b)
	}
	// The cause, as `metal machines show` gives it.
	show, err := inLab(ctx, st, metal, "machines", "show", "--site", st.Site, "vm-1")
	if err != nil {
		t.Fatalf("metal machines show vm-1: %v\n%s", err, show)
	}
	for _, want := range []string{"did not phone home within 1m30s", "last seen"} {
		if !strings.Contains(show, want) {
			t.Errorf("vm-1's record does not say %q:\n%s", want, show)
		}
	}
	t.Logf("vm-1:\n%s", show)
}
