package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// StepSecureBoot reads whether the machine's firmware has Secure Boot on,
// from its BMC, when the site does not say.
const StepSecureBoot Step = "secure-boot"

// SecureBootReader is a BMC that can tell whether the machine's firmware
// boots with UEFI Secure Boot on.
type SecureBootReader interface {
	// SecureBoot reports it; bmc.ErrUnsupported when the BMC cannot tell.
	SecureBoot(ctx context.Context) (on bool, err error)
}

func (b driverBMC) SecureBoot(ctx context.Context) (bool, error) {
	sd, ok := b.d.(bmc.SecureBootDriver)
	if !ok {
		return false, fmt.Errorf("%w: this BMC driver cannot read Secure Boot", bmc.ErrUnsupported)
	}
	sb, err := sd.SecureBoot(ctx)
	return sb.On(), err
}

// learnSecureBoot asks the BMC of a machine whose site leaves secure_boot
// unset whether its firmware has Secure Boot on, and keeps the answer in
// the store, where the netboot servers read it (inventory.Machine's
// BootPath): such a machine is sent the signed chain, never iPXE, which
// its firmware would refuse. A BMC that cannot tell leaves the declared
// path; one that says on while metal has no signed chain to serve fails
// the machine before it netboots.
func (m *machineRun) learnSecureBoot(ctx context.Context) error {
	if m.decl == nil || m.decl.SecureBoot != nil || m.bmc == nil {
		return nil
	}
	if m.decl.Boot != site.BootIPXE && m.decl.Boot != site.BootHTTP {
		return nil
	}
	sr, ok := m.bmc.(SecureBootReader)
	if !ok {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, m.r.opts.StepTimeout)
	on, err := sr.SecureBoot(sctx)
	cancel()
	var seen *bool
	switch {
	case errors.Is(err, bmc.ErrUnsupported):
		m.log.Debug("the BMC does not say whether Secure Boot is on", "err", err)
	case err != nil:
		// Kept as last read: a BMC that fails once has not changed the
		// firmware.
		m.log.Warn("Secure Boot state not read from the BMC", "err", err)
		return nil
	default:
		seen = &on
	}
	var was *bool
	if _, err := inventory.UpdateMachine(ctx, m.r.store, m.name, func(rec *inventory.Machine) error {
		was, rec.FirmwareSecureBoot = rec.FirmwareSecureBoot, seen
		return nil
	}); err != nil {
		return &stepError{StepSecureBoot, fmt.Errorf("record the Secure Boot state: %w", err)}
	}
	if seen == nil || !*seen {
		return nil
	}
	if was == nil || !*was {
		m.event(ctx, "its BMC says Secure Boot is on: it netboots the signed chain (shim, GRUB), not iPXE")
	}
	if !m.r.opts.SecureBootChain {
		return &stepError{StepSecureBoot, fmt.Errorf("the BMC of %s says its firmware has Secure Boot on, which refuses the unsigned iPXE, and this metal has no signed boot chain (install shim-signed and grub-efi-amd64-signed, or set secureboot_dir); or set secure_boot = false if the BMC is wrong", m.name)}
	}
	return nil
}
