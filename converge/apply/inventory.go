package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/internal/hwinv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// HardwareReader is a BMC that reports the machine's deep inventory.
type HardwareReader interface {
	Hardware(ctx context.Context) (*hwinv.Report, error)
}

func (b driverBMC) Hardware(ctx context.Context) (*hwinv.Report, error) {
	inv, err := b.d.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	if inv.Hardware == nil {
		return nil, errors.New("the BMC reports no deep inventory over this protocol")
	}
	return inv.Hardware, nil
}

// recordHardware reads the machine's deep inventory from its BMC and
// keeps it in the store; what changed since the last reading is an
// event (the apply that reads it accepts it as the machine's hardware).
// A BMC that cannot tell is logged, never a failure: the inventory
// informs, it does not gate an install.
func (m *machineRun) recordHardware(ctx context.Context) {
	hr, ok := m.bmc.(HardwareReader)
	if !ok || m.bmc == nil {
		return
	}
	now, err := hr.Hardware(ctx)
	if err != nil {
		m.log.Info("deep inventory not read", "err", err)
		return
	}
	now.ReadAt = m.r.opts.Clock.Now().UTC()
	var drift []string
	if _, err := inventory.UpdateMachine(ctx, m.r.store, m.name, func(rec *inventory.Machine) error {
		if rec.BMCHardware != nil {
			drift = hwinv.Drift(*rec.BMCHardware, *now)
		}
		rec.BMCHardware = now
		return nil
	}); err != nil {
		m.log.Warn("store the deep inventory", "err", err)
		return
	}
	if len(drift) > 0 {
		m.event(ctx, "hardware changed since the last reading: "+strings.Join(drift, "; "))
	}
}

// InventoryDrift reads the deep inventory of each declared machine whose
// last reading the store keeps, and reports what changed (a disk or NIC
// swapped, a PSU gone) and what its BMC says is unhealthy, as findings.
func InventoryDrift(ctx context.Context, s *site.Site, machines []inventory.Machine, bmcs BMCFunc) []plan.Finding {
	kept := map[string]inventory.Machine{}
	for _, m := range machines {
		if m.BMCHardware != nil {
			kept[m.Name] = m
		}
	}
	var todo []*site.Machine
	for _, m := range s.Machines {
		if _, ok := kept[m.Name]; ok && m.BMC != nil {
			todo = append(todo, m)
		}
	}
	found := make([][]string, len(todo))
	eachBMC(len(todo), func(i int) {
		m := todo[i]
		rec := kept[m.Name]
		b, err := bmcs(rec, m)
		if err != nil || b == nil {
			return // RefreshHardware and the run itself say so
		}
		hr, ok := b.(HardwareReader)
		if !ok {
			return
		}
		now, err := hr.Hardware(ctx)
		if err != nil {
			found[i] = []string{fmt.Sprintf("hardware inventory not read: %v", err)}
			return
		}
		for _, d := range hwinv.Drift(*rec.BMCHardware, *now) {
			found[i] = append(found[i], "hardware drift since "+rec.BMCHardware.ReadAt.Format("2006-01-02 15:04")+": "+d)
		}
		for _, u := range now.Unhealthy() {
			found[i] = append(found[i], "unhealthy: "+u)
		}
	})
	var out []plan.Finding
	for i, m := range todo {
		for _, f := range found[i] {
			out = append(out, plan.Finding{Machine: m.Name, Message: f})
		}
	}
	return out
}
