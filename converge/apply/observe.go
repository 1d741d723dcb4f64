package apply

import (
	"context"
	"fmt"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// Observed returns what the engine last carried out on each machine of the
// store, in the form plan.Compute diffs the site against:
//
//   - a declared machine that was never provisioned, or whose last attempt
//     failed, is absent: the plan provisions it;
//   - a declared machine otherwise has the attributes last applied to it;
//   - a machine the site no longer declares is present (so the plan
//     deprovisions it), unless it was only ever discovered by the agent:
//     metal never wipes a machine it was not told about.
func Observed(ctx context.Context, store inventory.Store, s *site.Site) (map[string]plan.Attributes, error) {
	machines, _, err := store.Machines(ctx)
	if err != nil {
		return nil, fmt.Errorf("read machines from the state store: %w", err)
	}
	return ObservedFrom(machines, s), nil
}

// ObservedFrom is Observed over machines already read from the store (by
// a client of a running daemon, which holds the store).
func ObservedFrom(machines []inventory.Machine, s *site.Site) map[string]plan.Attributes {
	declared := make(map[string]bool, len(s.Machines))
	for _, m := range s.Machines {
		declared[m.Name] = true
	}
	obs := make(map[string]plan.Attributes, len(machines))
	for _, m := range machines {
		switch {
		case declared[m.Name]:
			if m.Applied == nil || m.State == inventory.StateFailed {
				continue
			}
			obs[m.Name] = plan.FromStrings(m.Applied)
		case m.State == inventory.StateDiscovered || m.State == inventory.StateUnknown || m.State == "":
		case m.Applied != nil:
			obs[m.Name] = plan.FromStrings(m.Applied)
		default:
			obs[m.Name] = recordAttributes(m)
		}
	}
	return obs
}

// recordAttributes describes a machine that was declared once but never
// applied, from its inventory record, for the plan to show what goes.
func recordAttributes(m inventory.Machine) plan.Attributes {
	a := plan.Attributes{"mac": {Text: m.MAC}}
	if m.Identity.IP.IsValid() {
		a["ip"] = plan.Value{Text: m.Identity.IP.String()}
	}
	if m.Identity.BMCAddress != "" {
		a["bmc.address"] = plan.Value{Text: m.Identity.BMCAddress}
	}
	for k, v := range m.Identity.Labels {
		a["labels."+k] = plan.Value{Text: v}
	}
	return a
}

// PlanHardware is Plan with each machine's hardware settings as its BMC
// reports them (RefreshHardware), and what that found.
func PlanHardware(ctx context.Context, store inventory.Store, s *site.Site, bmcs BMCFunc) (*plan.Plan, error) {
	machines, _, err := store.Machines(ctx)
	if err != nil {
		return nil, fmt.Errorf("read machines from the state store: %w", err)
	}
	return PlanHardwareFrom(ctx, machines, s, bmcs), nil
}

// PlanHardwareFrom is PlanHardware over machines already read from the
// store (by a client of a running daemon, which holds the store).
func PlanHardwareFrom(ctx context.Context, machines []inventory.Machine, s *site.Site, bmcs BMCFunc) *plan.Plan {
	obs := ObservedFrom(machines, s)
	findings := RefreshHardware(ctx, s, obs, bmcs)
	findings = append(findings, InventoryDrift(ctx, s, machines, bmcs)...)
	p := plan.Compute(s, obs)
	p.Findings, p.HardwareRefreshed = findings, true
	return p
}

// Plan computes the plan of site s against the machines in store.
func Plan(ctx context.Context, store inventory.Store, s *site.Site) (*plan.Plan, error) {
	obs, err := Observed(ctx, store, s)
	if err != nil {
		return nil, err
	}
	return plan.Compute(s, obs), nil
}
