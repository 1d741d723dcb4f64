package apply

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// BMC is what the engine needs from one machine's baseboard management
// controller. Calls block until the BMC reports the change done.
type BMC interface {
	// PowerState reports whether the machine is on.
	PowerState(ctx context.Context) (on bool, err error)
	// SetPower turns the machine on or off and waits until it is.
	SetPower(ctx context.Context, on bool) error
	// SetNextBoot chooses the network (pxe) or the local disk for the next
	// boot, or for every boot when persistent.
	SetNextBoot(ctx context.Context, dev BootDevice, persistent bool) error
}

// BootDevice is where a machine boots from next.
type BootDevice string

const (
	BootPXE  BootDevice = "pxe"
	BootDisk BootDevice = "disk"
	BootCD   BootDevice = "cd" // virtual media
)

// BMCFunc returns the BMC of a machine: rec is its inventory record, decl
// its declaration in the site (nil when the machine left the site and is
// being deprovisioned). (nil, nil) means the machine has no BMC the engine
// can use: power steps then wait for someone to power it by hand.
type BMCFunc func(rec inventory.Machine, decl *site.Machine) (BMC, error)

// DriverBMCs builds each machine's BMC from its site bmc block with the bmc
// package (Redfish or IPMI through bmclib). tune, when set, adjusts each
// config (timeouts, retries) before the driver is made. A machine that
// left the site has no credentials any more (they are never stored), so it
// gets no BMC.
func DriverBMCs(log *slog.Logger, tune func(*bmc.Config)) BMCFunc {
	return func(_ inventory.Machine, decl *site.Machine) (BMC, error) {
		if decl == nil || decl.BMC == nil {
			return nil, nil
		}
		cfg := BMCConfig(decl)
		if tune != nil {
			tune(&cfg)
		}
		d, err := bmc.New(cfg, log)
		if err != nil {
			return nil, fmt.Errorf("bmc of %s: %w", decl.Name, err)
		}
		return FromDriver(d), nil
	}
}

// PlanBMCs are the BMCs a plan reads hardware settings and the deep
// inventory from: one try of 10 s each, so a dead BMC slows a plan by
// seconds, not minutes (the machine's run then says what is wrong with
// it). Every plan of an apply takes them, in-process or in metal serve.
// tune, when set, adjusts each config further (as for DriverBMCs).
func PlanBMCs(log *slog.Logger, tune func(*bmc.Config)) BMCFunc {
	return DriverBMCs(log, func(c *bmc.Config) {
		c.Timeout, c.Retries = planBMCTimeout, 1
		if tune != nil {
			tune(c)
		}
	})
}

const planBMCTimeout = 10 * time.Second

// BMCConfig is the bmc package's configuration for a machine's bmc block
// (which must be set), with the package's default timeouts and retries:
// the one place a site's BMC becomes a driver's config, for the engine,
// `metal bmc` and `metal doctor` alike.
func BMCConfig(m *site.Machine) bmc.Config { return BMCConfigOf(m.Name, m.BMC) }

// BMCConfigOf is the driver configuration of a bmc block (a machine's, or
// the fence's), name naming it in logs.
func BMCConfigOf(name string, b *site.BMC) bmc.Config {
	return bmc.Config{
		Machine: name, Protocol: b.Protocol, Address: b.Address,
		Username: b.Username, UsernameSecret: b.UsernameSensitive(), Password: bmc.Secret(b.Password),
		InsecureTLS: b.InsecureTLS, CAFile: b.CAFile,
	}
}

// FleetTargets are the drivers of the machines' bmc blocks, for
// bmc.RunFleet.
func FleetTargets(machines []*site.Machine, log *slog.Logger) ([]bmc.Target, error) {
	var targets []bmc.Target
	for _, m := range machines {
		d, err := bmc.New(BMCConfig(m), log)
		if err != nil {
			return nil, fmt.Errorf("machine %q: %w", m.Name, err)
		}
		targets = append(targets, bmc.Target{Name: m.Name, Driver: d})
	}
	return targets, nil
}

// FencePowerOff is the power-off of a site's fence block, for a promote
// (backup.PromoteOptions.PowerOff): it powers the old primary's host off
// and returns nil once its BMC confirms it off, within timeout. Half the
// bound goes to waiting for the power state, so a BMC that keeps reporting
// the host on is named as such before the bound cuts it off.
func FencePowerOff(f *site.Fence, timeout time.Duration, log *slog.Logger) (func(context.Context) error, error) {
	cfg := BMCConfigOf("fence", f.BMC)
	cfg.PowerWait = timeout / 2
	cfg.Timeout = min(bmc.DefaultTimeout, timeout/4)
	d, err := bmc.New(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("fence block: %w", err)
	}
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := bmc.Fence(ctx, d); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("no confirmation within --fence-timeout %v: %w", timeout, err)
			}
			return err
		}
		return nil
	}, nil
}

// FromDriver adapts a bmc.Driver to the engine's BMC; a driver that can
// change BIOS settings gives a HardwareBMC, one that can also update
// firmware a FirmwareBMC.
func FromDriver(d bmc.Driver) BMC {
	bd, ok := d.(bmc.BIOSDriver)
	if !ok {
		return driverBMC{d}
	}
	if fd, ok := d.(bmc.FirmwareDriver); ok {
		return firmwareBMC{biosBMC{driverBMC{d}, bd}, fd}
	}
	return biosBMC{driverBMC{d}, bd}
}

// FirmwareBMC is a HardwareBMC that can also update firmware.
type FirmwareBMC interface {
	HardwareBMC
	// Firmware reads one component's version.
	Firmware(ctx context.Context, component string) (bmc.FirmwareComponent, error)
	// UpdateFirmware has the BMC install the image at url on component
	// (or returns the update of it the BMC still runs).
	UpdateFirmware(ctx context.Context, component, url string) (bmc.Task, error)
	// Task reads an update's task.
	Task(ctx context.Context, uri string) (bmc.Task, error)
}

type firmwareBMC struct {
	biosBMC
	fd bmc.FirmwareDriver
}

func (b firmwareBMC) Firmware(ctx context.Context, component string) (bmc.FirmwareComponent, error) {
	return b.fd.Firmware(ctx, component)
}
func (b firmwareBMC) UpdateFirmware(ctx context.Context, component, url string) (bmc.Task, error) {
	return b.fd.UpdateFirmware(ctx, component, url)
}
func (b firmwareBMC) Task(ctx context.Context, uri string) (bmc.Task, error) {
	return b.fd.Task(ctx, uri)
}

// HardwareBMC is a BMC that can also read and stage BIOS settings.
type HardwareBMC interface {
	BMC
	// BIOS reads the settings in effect, those pending and the registry.
	BIOS(ctx context.Context) (bmc.BIOS, error)
	// SetBIOS stages settings for the next reset.
	SetBIOS(ctx context.Context, attrs map[string]string) error
	// Reset restarts the machine (powers it on if it is off), which
	// applies staged settings.
	Reset(ctx context.Context) error
}

type biosBMC struct {
	driverBMC
	bd bmc.BIOSDriver
}

func (b biosBMC) BIOS(ctx context.Context) (bmc.BIOS, error) { return b.bd.BIOS(ctx) }
func (b biosBMC) SetBIOS(ctx context.Context, attrs map[string]string) error {
	return b.bd.SetBIOS(ctx, attrs)
}
func (b biosBMC) Reset(ctx context.Context) error { return b.d.Power(ctx, bmc.ActionReset) }

type driverBMC struct{ d bmc.Driver }

func (b driverBMC) PowerState(ctx context.Context) (bool, error) {
	p, err := b.d.PowerState(ctx)
	if err != nil {
		return false, err
	}
	if p != bmc.PowerOn && p != bmc.PowerOff {
		return false, fmt.Errorf("the BMC reports power state %q, neither on nor off", p)
	}
	return p == bmc.PowerOn, nil
}

func (b driverBMC) SetPower(ctx context.Context, on bool) error {
	if on {
		return b.d.Power(ctx, bmc.ActionOn)
	}
	return b.d.Power(ctx, bmc.ActionOff)
}

func (b driverBMC) SetNextBoot(ctx context.Context, dev BootDevice, persistent bool) error {
	d := bmc.BootPXE
	switch dev {
	case BootDisk:
		d = bmc.BootDisk
	case BootCD:
		d = bmc.BootCDROM
	}
	return b.d.SetBootDevice(ctx, d, bmc.BootOptions{Persistent: persistent})
}
