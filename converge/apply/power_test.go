package apply_test

import (
	"context"
	"testing"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/inventory"
)

// TestPowerPoller: the poller records what each simulated machine's
// Redfish BMC reports, and a change made behind metal's back.
func TestPowerPoller(t *testing.T) {
	l := newLab(t, 3, 1, 0)
	s := l.site("", nil)
	ctx := context.Background()
	if err := apply.Sync(ctx, l.store, s); err != nil {
		t.Fatal(err)
	}
	names := l.fleet.Names()
	if err := l.fleet.Sim(names[1]).PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	p := &apply.PowerPoller{Site: s, Store: l.store, BMC: apply.DriverBMCs(nil, nil)}
	p.Round(ctx)
	want := map[string]inventory.PowerState{names[0]: inventory.PowerOff, names[1]: inventory.PowerOn, names[2]: inventory.PowerOff}
	check := func() {
		t.Helper()
		for name, w := range want {
			m, err := l.store.Machine(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if m.Power != w || m.PowerAt.IsZero() {
				t.Errorf("%s: power %q at %v, want %q", name, m.Power, m.PowerAt, w)
			}
		}
	}
	check()

	// Someone switches a machine off at its BMC.
	if err := l.fleet.Sim(names[1]).PowerOff(ctx, true); err != nil {
		t.Fatal(err)
	}
	p.Round(ctx)
	want[names[1]] = inventory.PowerOff
	check()
}
