package apply_test

import (
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/inventory"
)

// TestInventoryRecordedAndDrift: provisioning keeps the deep inventory the
// virtual BMC reports in the store; a later plan that finds another disk
// serial than the one kept reports the swap as a finding, and a plan of
// the unchanged machine finds nothing.
func TestInventoryRecordedAndDrift(t *testing.T) {
	l := newLab(t, 1, 1, 0)
	ctx := ctxT(t, 30*time.Second)
	s := l.site("", nil)
	if res := l.apply(ctx, l.engine(s, nil), s); res.State != inventory.RunDone {
		t.Fatalf("apply: %+v", res)
	}
	rec, err := l.store.Machine(ctx, "m0000")
	if err != nil {
		t.Fatal(err)
	}
	hw := rec.BMCHardware
	if hw == nil || len(hw.Disks) != 1 || hw.Disks[0].Serial != "metal-disk-0" || len(hw.CPUs) == 0 || len(hw.Firmware) == 0 || hw.ReadAt.IsZero() {
		t.Fatalf("kept deep inventory %+v: want the virtual BMC's CPUs, disk and firmware", hw)
	}
	bmcs := apply.DriverBMCs(nil, func(c *bmc.Config) { c.Retries = 1 })
	machines, _, err := l.store.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f := apply.InventoryDrift(ctx, s, machines, bmcs); len(f) != 0 {
		t.Errorf("unchanged machine: findings %+v", f)
	}
	// The disk the store remembers is not the one the BMC reports now.
	_, err = inventory.UpdateMachine(ctx, l.store, "m0000", func(m *inventory.Machine) error {
		m.BMCHardware.Disks[0].Serial = "OLD-DISK-7"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	machines, _, _ = l.store.Machines(ctx)
	f := apply.InventoryDrift(ctx, s, machines, bmcs)
	if len(f) != 1 || f[0].Machine != "m0000" || !strings.Contains(f[0].Message, "disk swapped: OLD-DISK-7 gone, metal-disk-0 new") {
		t.Errorf("findings %+v: want the swapped disk of m0000", f)
	}
}
