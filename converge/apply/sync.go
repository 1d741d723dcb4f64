package apply

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// Sync records the site's declared machines in the store, so the netboot
// servers know each MAC's name and address before anything is applied:
// a machine new to the store starts `ready`; a known one gets its declared
// identity (address, network, hostname, labels, BMC address) updated. A
// machine the agent discovered and the site now declares under a name is
// adopted: its hardware facts move to the declared record.
//
// Sync never touches what only the engine decides: lifecycle state of
// known machines, boot intents, and Identity.Image, which is the image a
// machine was last provisioned with (observed, not declared). Machines in
// the store but not in the site are left alone: removing them is a planned
// deprovision. It is idempotent and safe beside other writers (every
// write is compare-and-swap).
func Sync(ctx context.Context, store inventory.Store, s *site.Site) error {
	now := time.Now()
	for _, m := range s.Machines {
		if err := syncMachine(ctx, store, m, now); err != nil {
			return fmt.Errorf("record machine %s in the store: %w", m.Name, err)
		}
	}
	return nil
}

func syncMachine(ctx context.Context, store inventory.Store, m *site.Machine, now time.Time) error {
	mac := m.MAC.String()
	_, err := store.Machine(ctx, m.Name)
	if errors.Is(err, inventory.ErrNotFound) {
		rec := inventory.Machine{Name: m.Name, MAC: mac}
		declare(&rec, m)
		if prev, err := store.MachineByMAC(ctx, mac); err == nil && prev.Name != m.Name {
			// Discovered under a MAC-derived name, now declared: adopt it.
			rec.Hardware = prev.Hardware
			if err := store.DeleteMachine(ctx, prev.Name, prev.Revision); err != nil {
				return fmt.Errorf("adopt discovered machine %s: %w", prev.Name, err)
			}
		}
		if err := rec.SetState(inventory.StateReady, "declared in the site", now); err != nil {
			return err
		}
		if _, err = store.PutMachine(ctx, rec); !errors.Is(err, inventory.ErrConflict) {
			return err
		}
		// Someone created it meanwhile: fall through and update.
	} else if err != nil {
		return err
	}
	_, err = inventory.UpdateMachine(ctx, store, m.Name, func(rec *inventory.Machine) error {
		rec.MAC = mac
		declare(rec, m)
		return nil
	})
	return err
}

// declare writes the site's declaration of m into rec's identity.
func declare(rec *inventory.Machine, m *site.Machine) {
	id := &rec.Identity
	id.IP, id.IP6 = m.IP, m.IP6
	id.Network = m.Network
	id.Hostname = m.Hostname
	id.SwitchPortRelay, id.SwitchPortCircuit = netip.Addr{}, ""
	if p := m.SwitchPort; p != nil {
		id.SwitchPortRelay, id.SwitchPortCircuit = p.Relay, p.CircuitID
	}
	id.Boot = m.Boot
	id.SecureBoot = inventory.SecureBootUnset
	if m.SecureBoot != nil {
		id.SecureBoot = inventory.SecureBootOff
		if *m.SecureBoot {
			id.SecureBoot = inventory.SecureBootOn
		}
	}
	id.Wipe = inventory.WipeMethod(m.Wipe)
	id.Labels = maps.Clone(m.Labels)
	for k := range id.Labels {
		// The store's copy is what lists, the API and the console show;
		// the site keeps the value for whatever needs it.
		if m.Sensitive["labels."+k] {
			id.Labels[k] = inventory.Hidden
		}
	}
	id.BMCAddress = ""
	if m.BMC != nil {
		id.BMCAddress = m.BMC.Address
	}
}
