package bmc

import (
	"context"
	"fmt"
)

// Fence powers the machine off (hard, not an ACPI request the OS may
// ignore) and confirms with a fresh read of its power state that it is
// off: what a standby does to the old primary's host before it serves
// (STONITH). Only a confirmed off returns nil.
func Fence(ctx context.Context, d Driver) error {
	if err := d.Power(ctx, ActionOff); err != nil {
		return fmt.Errorf("fence: power off: %w", err)
	}
	p, err := d.PowerState(ctx)
	if err != nil {
		return fmt.Errorf("fence: confirm power off: %w", err)
	}
	if p != PowerOff {
		return fmt.Errorf("fence: the BMC reports power %s after powering off", p)
	}
	return nil
}
