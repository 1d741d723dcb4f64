package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/site"
)

// firmware brings each firmware component the machine declares to its
// version: the BMC installs the image from metal's HTTP server, its task
// is followed to the end and the version read back. A component already
// at its version is left alone, and an update the BMC still runs (a run
// killed while it flashed) is followed rather than started again, so a
// resumed run never flashes twice. A downgrade needs AllowDestroy.
func (m *machineRun) firmware(ctx context.Context) error {
	if len(m.decl.Firmware) == 0 {
		return nil
	}
	if m.bmc == nil {
		return &stepError{StepFirmware, errors.New("firmware is installed through the machine's BMC, and it has none")}
	}
	fb, ok := m.bmc.(FirmwareBMC)
	if !ok {
		return &stepError{StepFirmware, errors.New("this machine's BMC cannot update firmware (metal does it over Redfish)")}
	}
	for _, f := range m.decl.Firmware {
		if err := m.flash(ctx, fb, f); err != nil {
			return err
		}
	}
	return nil
}

func (m *machineRun) flash(ctx context.Context, fb FirmwareBMC, f site.Firmware) error {
	var cur bmc.FirmwareComponent
	if err := m.bmcStep(ctx, StepFirmware, "", func(ctx context.Context) error {
		var err error
		cur, err = fb.Firmware(ctx, f.Component)
		return err
	}); err != nil {
		return err
	}
	if cur.Version == f.Version {
		m.r.opts.Hook.MachineStep(m.name, StepFirmware, f.Component+" "+f.Version+" already installed")
		return nil
	}
	if plan.VersionLess(f.Version, cur.Version) && !m.r.opts.AllowDestroy {
		return &stepError{StepFirmware, fmt.Errorf("%s would go down from %s to %s: %w", f.Component, cur.Version, f.Version, ErrDestroyNotAllowed)}
	}
	url := m.r.opts.FirmwareURL(f.Image)
	if url == "" {
		return &stepError{StepFirmware, fmt.Errorf("firmware %s: metal has no HTTP URL for %s to give the BMC", f.Component, f.Image.URL)}
	}
	var task bmc.Task
	if err := m.bmcStep(ctx, StepFirmware, fmt.Sprintf("update %s from %s to %s", f.Component, cur.Version, f.Version), func(ctx context.Context) error {
		var err error
		task, err = fb.UpdateFirmware(ctx, f.Component, url)
		return err
	}); err != nil {
		return err
	}
	verb := "started"
	if task.Resumed {
		verb = "already running at the BMC: followed, not started again"
	}
	m.event(ctx, fmt.Sprintf("firmware: %s update %s to %s %s (task %s)", f.Component, cur.Version, f.Version, verb, orNone(task.URI)))
	if err := m.followTask(ctx, fb, task); err != nil {
		return &stepError{StepFlash, fmt.Errorf("firmware %s: %w", f.Component, err)}
	}
	var after bmc.FirmwareComponent
	if err := m.bmcStep(ctx, StepFlashCheck, "", func(ctx context.Context) error {
		var err error
		after, err = fb.Firmware(ctx, f.Component)
		return err
	}); err != nil {
		return err
	}
	if after.Version != f.Version {
		return &stepError{StepFlashCheck, fmt.Errorf("after the update the BMC reports %s %s, want %s: the image did not install (some BMCs install at the next reset; reset the machine and plan again)", f.Component, after.Version, f.Version)}
	}
	m.event(ctx, fmt.Sprintf("firmware: %s is %s", f.Component, f.Version))
	return nil
}

// followTask polls the BMC's task until it ends, telling the hook of its
// progress; AgentTimeout bounds it (a flash takes minutes, not hours).
func (m *machineRun) followTask(ctx context.Context, fb FirmwareBMC, t bmc.Task) error {
	m.recordStep(ctx, StepFlash, "")
	deadline := m.r.opts.Clock.After(m.r.opts.AgentTimeout)
	last := ""
	for {
		if note := fmt.Sprintf("%s %d%% %s", t.State, t.Percent, t.Message); note != last {
			last = note
			m.r.opts.Hook.MachineStep(m.name, StepFlash, note)
		}
		if t.Failed() {
			return fmt.Errorf("the BMC's update task ended %s (%s): %s", t.State, orNone(t.Status), orNone(t.Message))
		}
		if t.Done() || t.URI == "" {
			return nil
		}
		select {
		case <-m.r.opts.Clock.After(m.r.opts.PollInterval):
		case <-deadline:
			return fmt.Errorf("the BMC's update task %s did not end within %s (last: %s)", t.URI, m.r.opts.AgentTimeout, last)
		case <-ctx.Done():
			return ctx.Err()
		}
		next, err := fb.Task(ctx, t.URI)
		if err != nil {
			// A BMC busy flashing may not answer for a while: keep
			// polling until the deadline.
			m.log.Warn("read the firmware update task", "task", t.URI, "err", err)
			continue
		}
		t = next
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
