package plan_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/converge/plan"
)

// TestStale: what a stale plan is told apart from the plan now by, in the
// words apply refuses it with: each attribute observed otherwise (a BIOS
// setting its BMC reports changed, a value now pending), a machine
// planned otherwise; nothing for the same plan.
func TestStale(t *testing.T) {
	s := load(t, `
machine "a" {
  mac   = "52:54:00:00:00:01"
  image = image.a
  bios  = { ProcVirtualization = "Enabled", PxeRetries = 3 }
  bmc {
    protocol = "redfish"
    address  = "https://192.0.2.201"
    username = "admin"
    password = var.pw
  }
}
machine "b" {
  mac   = "52:54:00:00:00:02"
  image = image.a
}
`)
	applied := func(edit func(a, b plan.Attributes)) map[string]plan.Attributes {
		obs := map[string]plan.Attributes{}
		for _, m := range s.Machines {
			obs[m.Name] = plan.MachineAttributes(s, m)
		}
		if edit != nil {
			edit(obs["a"], obs["b"])
		}
		return obs
	}
	clean := applied(nil)
	for _, tc := range []struct {
		name     string
		was, now map[string]plan.Attributes
		want     []string
	}{
		{"same", clean, applied(nil), nil},
		{"drifted after the plan", clean, applied(func(a, _ plan.Attributes) {
			a["bios.ProcVirtualization"] = plan.Value{Text: "Disabled"}
		}), []string{`a bios.ProcVirtualization: "Enabled" when planned, "Disabled" now on its BMC`}},
		{"drift set back by hand after the plan", applied(func(a, _ plan.Attributes) {
			a["bios.PxeRetries"] = plan.Value{Text: "7"}
		}), clean, []string{`a bios.PxeRetries: "7" when planned, "3" now on its BMC`}},
		{"pending now", clean, applied(func(a, _ plan.Attributes) {
			a["bios.PxeRetries"] = plan.Value{Text: "7", Pending: "3"}
		}), []string{`a bios.PxeRetries: "3" when planned, "7" ("3" pending) now on its BMC`}},
		{"provisioned since", map[string]plan.Attributes{"a": clean["a"]}, clean, []string{`b: planned create, now no-op`}},
		{"label changed in the store", clean, applied(func(_, b plan.Attributes) {
			b["labels.rack"] = plan.Value{Text: "r1"}
		}), []string{`b labels.rack: (none) when planned, "r1" now`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := plan.Stale(plan.Compute(s, tc.was), plan.Compute(s, tc.now))
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Stale (-want +got):\n%s", d)
			}
		})
	}
}
