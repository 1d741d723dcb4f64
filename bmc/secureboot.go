package bmc

import (
	"context"
	"fmt"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"
)

// SecureBootDriver is a Driver that can tell whether the machine's
// firmware boots with UEFI Secure Boot on (Redfish only).
type SecureBootDriver interface {
	Driver
	// SecureBoot reads the system's SecureBoot resource; ErrUnsupported
	// when the BMC has none (legacy BIOS, or a BMC that does not say).
	SecureBoot(ctx context.Context) (SecureBoot, error)
}

var _ SecureBootDriver = (*Client)(nil)

// SecureBoot is a machine's UEFI Secure Boot state as its BMC reports it.
type SecureBoot struct {
	// Enable is SecureBootEnable: the firmware enforces Secure Boot when
	// it boots (from the next boot on, if it changed).
	Enable bool `json:"enable"`
	// CurrentBoot is SecureBootCurrentBoot: the boot running now has it
	// on.
	CurrentBoot bool `json:"current_boot"`
	// Mode is SecureBootMode (SetupMode, UserMode, AuditMode,
	// DeployedMode), as given.
	Mode string `json:"mode,omitempty"`
}

// On says the machine's next netboot meets Secure Boot: enabled for the
// next boot, or on in the current one (some BMCs report only that).
func (s SecureBoot) On() bool { return s.Enable || s.CurrentBoot }

// errNoSecureBoot is a Redfish system with no SecureBoot resource.
var errNoSecureBoot = fmt.Errorf("%w: the Redfish ComputerSystem has no SecureBoot resource", ErrUnsupported)

// SecureBoot reads the machine's Secure Boot state.
func (c *Client) SecureBoot(ctx context.Context) (SecureBoot, error) {
	var out SecureBoot
	err := c.redfishCall(ctx, "secure boot", "Secure Boot state", true, func(_ *gofish.APIClient, sys *redfish.ComputerSystem) error {
		sb, err := sys.SecureBoot()
		if err != nil {
			return fmt.Errorf("read SecureBoot: %w", err)
		}
		if sb == nil {
			return errNoSecureBoot
		}
		out = SecureBoot{Enable: sb.SecureBootEnable,
			CurrentBoot: sb.SecureBootCurrentBoot == redfish.EnabledSecureBootCurrentBootType,
			Mode:        string(sb.SecureBootMode)}
		return nil
	})
	return out, err
}
