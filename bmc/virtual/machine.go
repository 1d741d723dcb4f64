// Package virtual is a Redfish BMC for virtual machines: the lab and CI
// drive QEMU machines through the same Redfish code paths as a rack.
//
// The Redfish layer (Server) knows nothing of QEMU; it controls a Machine.
// QEMU implements Machine over QMP.
package virtual

import (
	"context"
	"errors"
)

// Machine is what the virtual BMC controls.
type Machine interface {
	// PowerState reports whether the machine is running.
	PowerState(ctx context.Context) (Power, error)
	// PowerOn starts the machine; no-op if it runs.
	PowerOn(ctx context.Context) error
	// PowerOff stops the machine: at once if force, else by asking the
	// guest (ACPI power button), which may ignore it.
	PowerOff(ctx context.Context, force bool) error
	// Reset restarts a running machine (applying a pending boot device where
	// the implementation can) or starts one that is off.
	Reset(ctx context.Context) error
	// SetBootDevice chooses what the machine boots from at its next start.
	SetBootDevice(ctx context.Context, b Boot) error
	// InsertMedia attaches image (a path or URL) as the virtual CD.
	InsertMedia(ctx context.Context, image string) error
	// EjectMedia removes the virtual CD.
	EjectMedia(ctx context.Context) error
}

// Power is a Redfish PowerState.
type Power string

const (
	PowerOn  Power = "On"
	PowerOff Power = "Off"
)

// Boot is a Redfish boot source override.
type Boot struct {
	Target  string // BootSourceOverrideTarget: None, Pxe, Hdd, Cd, BiosSetup
	Enabled string // BootSourceOverrideEnabled: Disabled, Once, Continuous
	Mode    string // BootSourceOverrideMode: UEFI, Legacy
}

// Boot override values this BMC accepts.
var (
	bootTargets = []string{"None", "Pxe", "Hdd", "Cd", "BiosSetup"}
	bootEnabled = []string{"Disabled", "Once", "Continuous"}
	bootModes   = []string{"UEFI", "Legacy"}
	resetTypes  = []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle"}
)

// ErrNotConfigured is returned when a machine is asked to do something its
// configuration does not allow (starting QEMU without a command line).
var ErrNotConfigured = errors.New("not configured")
