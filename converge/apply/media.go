package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// StepMedia builds a virtual-media machine's boot CD and has its BMC
// attach it and boot from it next.
const StepMedia Step = "boot-media"

// MediaBMC is a BMC that can attach virtual media (Redfish).
type MediaBMC interface {
	BMC
	// InsertMedia attaches the CD image at url and makes it the next boot.
	InsertMedia(ctx context.Context, url string) error
	// EjectMedia detaches it.
	EjectMedia(ctx context.Context) error
}

// MediaFunc builds the boot CD of machine holding the install agent
// (Options.AgentBoot's kernel and initrds) booted with cmdline, and returns
// the URL its BMC fetches it from.
type MediaFunc func(ctx context.Context, machine, cmdline string) (url string, err error)

// errNoMedia: the engine was given no way to build boot CDs.
var errNoMedia = errors.New("this metal builds no boot CDs for virtual media (no Options.Media)")

// mediaCmdline is the agent's command line on a virtual-media machine's
// CD: no DHCP server answers it, so the CD carries what a lease and the
// boot script would have: its NIC (BOOTIF), address and gateway from the
// site, and the task's secret, by which metal knows it whatever address it
// comes from.
func mediaCmdline(base string, decl *site.Machine, n *site.Network, task *inventory.AgentTask) (string, error) {
	if !decl.IP.IsValid() || n == nil {
		return "", fmt.Errorf("machine %s boots from virtual media but has no declared address on a declared network", decl.Name)
	}
	args := []string{base,
		"BOOTIF=01-" + strings.ReplaceAll(decl.MAC.String(), ":", "-"),
		fmt.Sprintf("metal.ip=%s/%d", decl.IP, n.Subnet.Bits())}
	if n.Gateway.IsValid() {
		args = append(args, "metal.gw="+n.Gateway.String())
	}
	if task != nil && task.Secret != "" {
		args = append(args, "metal.token="+task.Secret)
	}
	return strings.TrimSpace(strings.Join(args, " ")), nil
}

// bootMedia builds the machine's CD for its install intent and has the
// BMC attach it and boot it once.
func (m *machineRun) bootMedia(ctx context.Context, in inventory.BootIntent) error {
	m.recordStep(ctx, StepMedia, "build the boot CD")
	if m.r.opts.Media == nil {
		return &stepError{StepMedia, errNoMedia}
	}
	mb, ok := m.bmc.(MediaBMC)
	if !ok {
		return &stepError{StepMedia, fmt.Errorf("the BMC of %s cannot attach virtual media (it needs Redfish)", m.name)}
	}
	cmdline, err := mediaCmdline(in.Cmdline, m.decl, m.r.e.site.Network(m.decl.Network), in.Task)
	if err != nil {
		return &stepError{StepMedia, err}
	}
	url, err := m.r.opts.Media(ctx, m.name, cmdline)
	if err != nil {
		return &stepError{StepMedia, fmt.Errorf("build the boot CD: %w", err)}
	}
	m.log.Info("boot CD built", "url", url)
	return m.bmcStep(ctx, StepMedia, "attach it, boot it once", func(ctx context.Context) error {
		if err := mb.InsertMedia(ctx, url); err != nil {
			return err
		}
		return mb.SetNextBoot(ctx, BootCD, false)
	})
}

// ejectMedia detaches the CD once the agent is done: it holds the task's
// secret, and the machine boots its disk from now on.
func (m *machineRun) ejectMedia(ctx context.Context) error {
	mb, ok := m.bmc.(MediaBMC)
	if !ok {
		return nil
	}
	return m.bmcStep(ctx, StepLocal, "", mb.EjectMedia)
}

// InsertMedia and EjectMedia make every driver's BMC a MediaBMC; a driver
// without virtual media (IPMI) fails the step saying so.
func (b driverBMC) InsertMedia(ctx context.Context, url string) error {
	md, ok := b.d.(bmc.MediaDriver)
	if !ok {
		return errors.New("this BMC has no virtual media (it needs Redfish)")
	}
	return md.InsertMedia(ctx, bmc.MediaCD, url)
}

func (b driverBMC) EjectMedia(ctx context.Context) error {
	md, ok := b.d.(bmc.MediaDriver)
	if !ok {
		return errors.New("this BMC has no virtual media (it needs Redfish)")
	}
	return md.EjectMedia(ctx)
}
