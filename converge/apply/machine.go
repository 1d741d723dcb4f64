package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// machineRun is one machine's part of a run: a state machine whose steps
// are recorded before they are taken, so a resumed run knows where the
// machine was.
type machineRun struct {
	r      *runner
	name   string
	decl   *site.Machine // nil for a deprovision
	change plan.Change
	log    *slog.Logger
	// from is the step a resumed machine was at ("" or pending: start).
	from Step
	bmc  BMC
}

// stepError is a failure at one step, with its cause.
type stepError struct {
	step Step
	err  error
}

func (e *stepError) Error() string { return fmt.Sprintf("%s: %v", e.step, e.err) }
func (e *stepError) Unwrap() error { return e.err }

func (m *machineRun) apply(ctx context.Context) error {
	rec, err := m.r.store.Machine(ctx, m.name)
	if err != nil {
		return &stepError{StepCheckBMC, fmt.Errorf("read the machine from the store: %w", err)}
	}
	if m.bmc, err = m.r.opts.BMC(rec, m.decl); err != nil {
		return &stepError{StepCheckBMC, err}
	}
	switch m.change.Action {
	case plan.Create, plan.Replace:
		return m.provision(ctx, rec)
	case plan.Update:
		return m.update(ctx)
	case plan.Delete:
		return m.deprovision(ctx, rec)
	}
	return nil
}

// provision installs the machine's image: the agent writes a disk image;
// a diskless image's kernel is booted over the network for good; a
// machine without an image only gets its power state.
func (m *machineRun) provision(ctx context.Context, rec inventory.Machine) error {
	im := m.r.e.site.Image(m.decl.Image)
	if im == nil {
		if err := m.power(ctx); err != nil {
			return err
		}
		return m.finish(ctx, false)
	}
	diskless := im.Disk.URL == ""
	if diskless && m.virtualMedia() {
		return &stepError{StepIntent, fmt.Errorf("image %q is diskless (a kernel booted over the network), but machine %s boots from virtual media, which carries the install agent only", im.Name, m.name)}
	}
	if !diskless && m.r.opts.AgentBoot.Kernel == "" {
		return &stepError{StepIntent, fmt.Errorf("image %q has a disk to write but metal has no install agent to boot; build it with `metal images build-agent`", im.Name)}
	}

	// A resumed machine whose intent was written keeps it, so an agent
	// that is already installing is waited for rather than started again.
	var taskID string
	var since int64
	resumeAt := m.resumePoint(rec)
	if resumeAt == "" {
		// The BIOS first: boot mode and settings apply to the install.
		if _, err := m.hardware(ctx); err != nil {
			return err
		}
		on, err := m.checkBMC(ctx)
		if err != nil {
			return err
		}
		m.recordHardware(ctx)
		if err := m.learnSecureBoot(ctx); err != nil {
			return err
		}
		if err := m.powerOff(ctx, on); err != nil {
			return err
		}
		var in inventory.BootIntent
		if taskID, since, in, err = m.writeInstallIntent(ctx, im); err != nil {
			return &stepError{StepIntent, err}
		}
		if m.virtualMedia() {
			if err := m.bootMedia(ctx, in); err != nil {
				return err
			}
		} else if err := m.bmcStep(ctx, StepBootPXE, "", func(ctx context.Context) error {
			return m.bmc.SetNextBoot(ctx, BootPXE, diskless)
		}); err != nil {
			return err
		}
	} else if rec.Intent.Task != nil {
		taskID = rec.Intent.Task.ID
		m.log.Info("resuming", "at", resumeAt, "task", taskID)
	}
	if resumeAt == "" || resumeAt == StepPowerOn || resumeAt == StepInstall {
		note := ""
		if m.bmc == nil {
			note = "no BMC: power the machine on by hand so it netboots"
		}
		if err := m.bmcStep(ctx, StepPowerOn, note, func(ctx context.Context) error { return m.bmc.SetPower(ctx, true) }); err != nil {
			return err
		}
		m.recordStep(ctx, StepInstall, "")
		var err error
		if diskless {
			err = m.waitNetboot(ctx, since)
		} else {
			err = m.waitAgent(ctx, taskID, since)
		}
		if err != nil {
			return &stepError{StepInstall, err}
		}
	}
	if !diskless {
		// The agent reboots by itself shortly after it reports done: the
		// intent says boot the local disk before it asks again.
		m.recordStep(ctx, StepLocal, "")
		if _, err := inventory.UpdateMachine(ctx, m.r.store, m.name, func(rec *inventory.Machine) error {
			rec.Intent = inventory.BootIntent{Action: inventory.BootLocal}
			return nil
		}); err != nil {
			return &stepError{StepLocal, err}
		}
		if m.virtualMedia() {
			if err := m.ejectMedia(ctx); err != nil {
				return err
			}
		}
		if err := m.bmcStep(ctx, StepLocal, "", func(ctx context.Context) error {
			return m.bmc.SetNextBoot(ctx, BootDisk, false)
		}); err != nil {
			return err
		}
		// Provisioned means the installed OS came up, not only that its
		// image was written.
		// A resumed run may have missed the OS's first DHCP request
		// while no metal ran, so only a reboot this run saw is watched.
		fresh := resumeAt == "" || resumeAt == StepPowerOn || resumeAt == StepInstall
		if err := m.waitReady(ctx, im, fresh); err != nil {
			return &stepError{StepReady, err}
		}
	}
	if m.decl.Power == site.PowerOff {
		if err := m.power(ctx); err != nil {
			return err
		}
	}
	return m.finish(ctx, true)
}

// resumePoint is where a resumed provision picks up: "" to start over, or
// the step whose intent (with its task) is still in the store.
func (m *machineRun) resumePoint(rec inventory.Machine) Step {
	if rec.State != inventory.StateProvisioning {
		return ""
	}
	switch m.from {
	case StepPowerOn, StepInstall:
		if rec.Intent.Action == inventory.BootInstall {
			return m.from
		}
	case StepLocal, StepReady, StepPower:
		if rec.Intent.Action == inventory.BootLocal {
			return m.from
		}
		// Stopped between recording the step and writing the local-disk
		// intent: the image is written (the agent reported its task
		// done), so the intent is what is left, not a second install.
		if t := rec.Intent.Task; rec.Intent.Action == inventory.BootInstall && t != nil &&
			rec.Agent != nil && rec.Agent.TaskID == t.ID && rec.Agent.Phase == inventory.AgentDone {
			return StepLocal
		}
	}
	return ""
}

// virtualMedia says the machine boots the agent from a CD its BMC attaches.
func (m *machineRun) virtualMedia() bool {
	return m.decl != nil && m.decl.Boot == site.BootVirtualMedia
}

// writeInstallIntent moves the machine to provisioning with a fresh boot
// intent and returns the agent task's ID (disk images), the event
// sequence number after which the machine's netboot counts (diskless) and
// the intent.
func (m *machineRun) writeInstallIntent(ctx context.Context, im *site.Image) (string, int64, inventory.BootIntent, error) {
	m.recordStep(ctx, StepIntent, "")
	var in inventory.BootIntent
	var ready *inventory.Readiness
	taskID, phoneHome := "", ""
	var phoneHomeAlso []string
	if im.Disk.URL == "" {
		in = inventory.BootIntent{Action: inventory.BootInstall, Kernel: m.source(im.Name, im.Kernel), Cmdline: im.Cmdline,
			Sensitive: im.CmdlineSensitive || im.Kernel.Sensitive}
		for _, src := range im.Initrd {
			in.Initrds = append(in.Initrds, m.source(im.Name, src))
			in.Sensitive = in.Sensitive || src.Sensitive
		}
	} else {
		taskID = randomHex(8)
		ab := m.r.opts.AgentBoot
		var err error
		if ready, phoneHome, phoneHomeAlso, err = m.readiness(im, taskID); err != nil {
			return "", 0, in, err
		}
		netConfig, err := m.networkConfig()
		if err != nil {
			return "", 0, in, err
		}
		checksum, format := im.Disk.Checksum, im.Format
		if m.r.opts.ImageStream != nil {
			if sum, f, ok := m.r.opts.ImageStream(im.Name); ok {
				checksum, format = sum, f
			}
		}
		in = inventory.BootIntent{
			Action: inventory.BootInstall, Kernel: ab.Kernel, Initrds: slices.Clone(ab.Initrds), Cmdline: m.agentCmdline(ab),
			Task: &inventory.AgentTask{
				ID: taskID, Kind: inventory.TaskInstall, Image: im.Name, ImageURL: m.reachable(m.r.opts.ImageURL(im.Name)),
				Checksum: checksum, Format: format, Disk: m.decl.Disk,
				Hostname: m.hostname(), SSHAuthorizedKeys: slices.Clone(m.decl.SSHAuthorizedKeys), UserData: m.decl.UserData,
				PhoneHome: phoneHome, PhoneHomeAlso: phoneHomeAlso, NetworkConfig: netConfig,
				Secret: inventory.NewTaskSecret(),
			},
		}
	}
	now := m.r.opts.Clock.Now()
	if _, err := inventory.UpdateMachine(ctx, m.r.store, m.name, func(rec *inventory.Machine) error {
		rec.Intent = in
		rec.Ready = ready
		return moveTo(rec, inventory.StateProvisioning, "apply run "+m.r.run.ID+": install image "+im.Name, now)
	}); err != nil {
		return "", 0, in, err
	}
	ev, err := m.r.store.AppendEvent(ctx, inventory.Event{
		Time: now, Machine: m.name, MAC: m.decl.MAC.String(), Kind: inventory.EventApply,
		Message: fmt.Sprintf("run %s: boot intent install %s%s", m.r.run.ID, im.Name, taskNote(taskID)),
	})
	if err != nil {
		return "", 0, in, err
	}
	return taskID, ev.Seq, in, nil
}

// networkConfig renders the machine's NoCloud network-config from the
// site (JSON), "" when its installed OS takes DHCP.
func (m *machineRun) networkConfig() (string, error) {
	nc := m.decl.NetworkConfig(m.r.e.site.Network(m.decl.Network))
	if nc == nil {
		return "", nil
	}
	b, err := json.Marshal(nc)
	if err != nil {
		return "", fmt.Errorf("network config of %s: %w", m.name, err)
	}
	return string(b), nil
}

func taskNote(id string) string {
	if id == "" {
		return " (diskless)"
	}
	return " (agent task " + id + ")"
}

func (m *machineRun) hostname() string {
	if m.decl.Hostname != "" {
		return m.decl.Hostname
	}
	return m.decl.Name
}

// source is where a machine fetches a diskless image's file from.
func (m *machineRun) source(image string, src site.Source) string {
	return m.r.opts.ImagePath(image, src)
}

// defaultImagePath passes remote URLs through and serves local files
// where the daemon staged them before it had an image cache.
func defaultImagePath(image string, src site.Source) string {
	if strings.HasPrefix(src.URL, "http://") || strings.HasPrefix(src.URL, "https://") {
		return src.URL
	}
	return "/images/" + url.PathEscape(image) + "/" + url.PathEscape(path.Base(strings.TrimPrefix(src.URL, "file://")))
}

// moveTo sets the machine's state, through ready when the lifecycle has no
// direct move (a deprovisioned or discovered machine starting over).
func moveTo(rec *inventory.Machine, to inventory.State, cause string, now time.Time) error {
	if rec.State == to {
		return nil
	}
	if !inventory.CanTransition(rec.State, to) && inventory.CanTransition(rec.State, inventory.StateReady) {
		if err := rec.SetState(inventory.StateReady, cause, now); err != nil {
			return err
		}
	}
	return rec.SetState(to, cause, now)
}

// update changes what needs no reinstall: BIOS settings and the power
// state through the BMC; the declared identity (labels, address, BMC
// settings) was recorded by Sync already.
func (m *machineRun) update(ctx context.Context) error {
	powerChanged, hw := false, false
	for _, a := range m.change.Attrs {
		powerChanged = powerChanged || a.Name == "power"
		hw = hw || plan.IsHardware(a.Name)
	}
	if hw {
		reset, err := m.hardware(ctx)
		if err != nil {
			return err
		}
		// The reset started the machine: bring it back to the site's
		// power state.
		powerChanged = powerChanged || (reset && m.decl.Power == site.PowerOff)
	}
	if powerChanged {
		if err := m.power(ctx); err != nil {
			return err
		}
	}
	m.recordStep(ctx, StepUpdate, "")
	return m.finish(ctx, false)
}

// power brings the machine to the site's power state, if it declares one.
func (m *machineRun) power(ctx context.Context) error {
	want := m.decl.Power
	if want == "" || m.bmc == nil {
		return nil
	}
	return m.bmcStep(ctx, StepPower, "power "+want, func(ctx context.Context) error {
		return m.bmc.SetPower(ctx, want == site.PowerOn)
	})
}

// finish records the machine as converged: what was applied, and for a
// provision, the image it now runs and the provisioned state.
func (m *machineRun) finish(ctx context.Context, provisioned bool) error {
	attrs := plan.MachineAttributes(m.r.e.site, m.decl).Strings()
	now := m.r.opts.Clock.Now()
	_, err := inventory.UpdateMachine(ctx, m.r.store, m.name, func(rec *inventory.Machine) error {
		rec.Applied = attrs
		if provisioned {
			rec.Identity.Image = m.decl.Image
			return moveTo(rec, inventory.StateProvisioned, "apply run "+m.r.run.ID, now)
		}
		return nil
	})
	if err != nil {
		return &stepError{StepDone, err}
	}
	what := "updated"
	if provisioned {
		what = "provisioned with " + m.decl.Image
	}
	m.event(ctx, what)
	return nil
}

// deprovision wipes a machine that left the site and removes it from the
// store. A machine never provisioned has nothing to wipe: it is powered
// off and removed.
func (m *machineRun) deprovision(ctx context.Context, rec inventory.Machine) error {
	now := m.r.opts.Clock.Now()
	if _, err := inventory.UpdateMachine(ctx, m.r.store, m.name, func(rec *inventory.Machine) error {
		return moveTo(rec, inventory.StateDeprovisioning, "apply run "+m.r.run.ID+": left the site", now)
	}); err != nil {
		return &stepError{StepWipe, err}
	}
	installed := rec.Applied["image"] != "" || rec.Identity.Image != ""
	if installed {
		// The run's --wipe, when given, is the operator's word for this
		// run; else what the site said of the machine while it declared
		// it.
		method := m.r.opts.Wipe
		if method == "" {
			method = rec.Identity.Wipe
		}
		if err := m.wipe(ctx, method); err != nil {
			return err
		}
	}
	if m.bmc != nil {
		if err := m.bmcStep(ctx, StepPowerOff, "", func(ctx context.Context) error { return m.bmc.SetPower(ctx, false) }); err != nil {
			return err
		}
	}
	m.recordStep(ctx, StepRemove, "")
	m.event(ctx, "deprovisioned: removed from the store")
	cur, err := m.r.store.Machine(ctx, m.name)
	if err == nil {
		err = m.r.store.DeleteMachine(ctx, m.name, cur.Revision)
	}
	if err != nil && !errors.Is(err, inventory.ErrNotFound) {
		return &stepError{StepRemove, err}
	}
	return nil
}

// agentCmdline is the agent's kernel command line for this machine:
// ab.Cmdline6 on an IPv6-only network, where metal's IPv4 URL cannot be
// reached.
func (m *machineRun) agentCmdline(ab AgentBoot) string {
	if ab.Cmdline6 != "" && m.ipv6Only() {
		return ab.Cmdline6
	}
	return ab.Cmdline
}

// ipv6Only says whether the machine is on an IPv6-only network.
func (m *machineRun) ipv6Only() bool {
	if m.decl == nil {
		return false
	}
	n := m.r.e.site.Network(m.decl.Network)
	return n != nil && !n.Subnet.IsValid() && n.Subnet6.IsValid()
}

// reachable is u, a URL on metal's HTTP server, on metal's IPv6 URL for a
// machine on an IPv6-only network of a site whose URL is on IPv4: the
// agent and the installed OS have no other way to it.
func (m *machineRun) reachable(u string) string {
	base6 := m.r.opts.AgentBoot.BaseURL6
	if base6 == "" || u == "" || !m.ipv6Only() {
		return u
	}
	p, err := url.Parse(u)
	if err != nil || !p.IsAbs() {
		return u
	}
	b, err := url.Parse(base6)
	if err != nil {
		return u
	}
	p.Scheme, p.Host = b.Scheme, b.Host
	return p.String()
}

// wipe boots the agent with a task to erase the disks by method and
// waits for it.
func (m *machineRun) wipe(ctx context.Context, method inventory.WipeMethod) error {
	ab := m.r.opts.AgentBoot
	if ab.Kernel == "" {
		return &stepError{StepWipe, errors.New("metal has no install agent to boot for the wipe; build it with `metal images build-agent`")}
	}
	var taskID string
	var since int64
	if m.from == StepWipe {
		if rec, err := m.r.store.Machine(ctx, m.name); err == nil && rec.Intent.Task != nil && rec.Intent.Task.Kind == inventory.TaskWipe {
			taskID = rec.Intent.Task.ID
		}
	}
	if taskID == "" {
		on, err := m.checkBMC(ctx)
		if err != nil {
			return err
		}
		if err := m.powerOff(ctx, on); err != nil {
			return err
		}
		taskID = randomHex(8)
		m.recordStep(ctx, StepIntent, "")
		if _, err := inventory.UpdateMachine(ctx, m.r.store, m.name, func(rec *inventory.Machine) error {
			rec.Intent = inventory.BootIntent{
				Action: inventory.BootInstall, Kernel: ab.Kernel, Initrds: slices.Clone(ab.Initrds), Cmdline: m.agentCmdline(ab),
				Task: &inventory.AgentTask{ID: taskID, Kind: inventory.TaskWipe, Wipe: method, Secret: inventory.NewTaskSecret()},
			}
			return nil
		}); err != nil {
			return &stepError{StepIntent, err}
		}
		since = m.event(ctx, "boot intent wipe (agent task "+taskID+")")
		if err := m.bmcStep(ctx, StepBootPXE, "", func(ctx context.Context) error {
			return m.bmc.SetNextBoot(ctx, BootPXE, false)
		}); err != nil {
			return err
		}
	}
	note := ""
	if m.bmc == nil {
		note = "no BMC credentials (the machine left the site): power-cycle it by hand so it netboots the wipe"
	}
	if err := m.bmcStep(ctx, StepPowerOn, note, func(ctx context.Context) error { return m.bmc.SetPower(ctx, true) }); err != nil {
		return err
	}
	m.recordStep(ctx, StepWipe, "")
	if err := m.waitAgent(ctx, taskID, since); err != nil {
		return &stepError{StepWipe, err}
	}
	return nil
}

// checkBMC reads the power state: a BMC that cannot answer fails the
// machine before anything was changed. Without a BMC the machine counts
// as on (someone must power it, and off, by hand).
func (m *machineRun) checkBMC(ctx context.Context) (on bool, err error) {
	on = true
	err = m.bmcStep(ctx, StepCheckBMC, "", func(ctx context.Context) error {
		var err error
		on, err = m.bmc.PowerState(ctx)
		return err
	})
	return on, err
}

// powerOff turns the machine off before its intent changes, so it boots
// the new one from the start; a machine found off is left so.
func (m *machineRun) powerOff(ctx context.Context, on bool) error {
	if !on {
		m.r.opts.Hook.MachineStep(m.name, StepPowerOff, "already off")
		return nil
	}
	return m.bmcStep(ctx, StepPowerOff, "", func(ctx context.Context) error { return m.bmc.SetPower(ctx, false) })
}

// bmcStep records step and runs fn with the step timeout, retrying. With
// no BMC it only records the step (and its note, which says what a person
// must do instead).
func (m *machineRun) bmcStep(ctx context.Context, step Step, note string, fn func(context.Context) error) error {
	m.recordStep(ctx, step, note)
	if m.bmc == nil {
		return nil
	}
	var err error
	for attempt := 1; attempt <= m.r.opts.Retries; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, m.r.opts.StepTimeout)
		err = fn(sctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
		m.log.Warn("bmc step failed", "step", step, "attempt", attempt, "err", err)
		if attempt < m.r.opts.Retries {
			select {
			case <-m.r.opts.Clock.After(m.r.opts.RetryDelay):
			case <-ctx.Done():
			}
		}
	}
	if err != nil {
		return &stepError{step, err}
	}
	return nil
}

// waitAgent waits until the agent reports task done (nil) or failed, or
// the machine shows no sign of booting after event since (stallTimer).
func (m *machineRun) waitAgent(ctx context.Context, taskID string, since int64) error {
	var last inventory.AgentStatus
	return m.waitFor(ctx, since, "no report from the install agent", func() (bool, error) {
		rec, err := m.r.store.Machine(ctx, m.name)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("read machine while waiting for the agent", "err", err)
			}
			return false, nil
		}
		if rec.Intent.Task == nil || rec.Intent.Task.ID != taskID {
			return false, fmt.Errorf("the boot intent was changed by someone else while waiting for agent task %s", taskID)
		}
		a := rec.Agent
		if a == nil || a.TaskID != taskID {
			return false, nil
		}
		if *a != last {
			last = *a
			m.r.opts.Hook.AgentReport(m.name, *a)
		}
		switch a.Phase {
		case inventory.AgentDone:
			return true, nil
		case inventory.AgentFailed:
			return false, fmt.Errorf("install agent failed: %s", a.Error)
		}
		return false, nil
	})
}

// waitNetboot waits until the machine fetched its kernel or initrd after
// event sequence number since: a diskless image is running.
func (m *machineRun) waitNetboot(ctx context.Context, since int64) error {
	return m.waitFor(ctx, since, "the machine did not fetch its kernel", func() (bool, error) {
		evs, err := m.r.store.Events(ctx, inventory.EventQuery{Machine: m.name, AfterSeq: since})
		if err != nil {
			return false, nil
		}
		for _, ev := range evs {
			if ev.Kind == inventory.EventKernel || ev.Kind == inventory.EventInitrd {
				return true, nil
			}
		}
		return false, nil
	})
}

// waitFor calls check each time the machine's record changes (and every
// PollInterval) until it says done or fails. It gives up, saying what,
// after AgentTimeout, and earlier when the machine shows no sign of
// booting after event since (stallTimer, checkContact).
func (m *machineRun) waitFor(ctx context.Context, since int64, what string, check func() (done bool, err error)) error {
	sub := m.r.watch.subscribe(m.name)
	defer m.r.watch.unsubscribe(m.name, sub)
	deadline := m.r.opts.Clock.After(m.r.opts.AgentTimeout)
	stall := m.stallTimer(since)
	for {
		if done, err := check(); done || err != nil {
			return err
		}
		select {
		case <-sub:
		case <-m.r.opts.Clock.After(m.r.opts.PollInterval):
		case <-stall:
			stall = nil
			if err := m.checkContact(ctx, since); err != nil {
				return err
			}
		case <-deadline:
			return fmt.Errorf("%s within %s (is the machine netbooting? see `metal machines show %s`)", what, m.r.opts.AgentTimeout, m.name)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// recordStep records that the machine begins step and tells the hook.
//
// Only the steps a resume acts on are written to the store (steps before
// the intent start over; power-on and install resume alike), and a step
// already recorded is not written again: on an embedded store every write
// is a synced disk transaction.
func (m *machineRun) recordStep(ctx context.Context, step Step, note string) {
	m.log.Debug("step", "step", step)
	st := m.r.steps[m.name]
	switch {
	case step == StepCheckBMC || step == StepPowerOff || step == StepBootPXE || step == StepMedia || step == StepInstall || step == StepPower:
	case st.Step == string(step) && st.State == inventory.RunRunning:
	default:
		m.record(ctx, step, inventory.RunRunning, "")
	}
	m.r.opts.Hook.MachineStep(m.name, step, note)
}

// record writes the machine's step in the run. A failed write is logged:
// the run goes on, and a resume starts that machine over.
func (m *machineRun) record(ctx context.Context, step Step, state inventory.RunState, cause string) {
	st := m.r.steps[m.name]
	st.Step, st.State, st.Error, st.UpdatedAt = string(step), state, cause, m.r.opts.Clock.Now().UTC()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	out, err := m.r.store.PutApplyStep(wctx, m.r.run.ID, *st)
	if errors.Is(err, inventory.ErrConflict) {
		// Someone else wrote the step (an operator's tool): take theirs
		// as the base and write ours over it.
		if run, rerr := m.r.store.ApplyRun(wctx, m.r.run.ID); rerr == nil {
			if cur, ok := run.Steps[m.name]; ok {
				st.Revision = cur.Revision
				out, err = m.r.store.PutApplyStep(wctx, m.r.run.ID, *st)
			}
		}
	}
	if err != nil {
		m.log.Error("record apply step", "step", step, "err", err)
		return
	}
	*st = out
}

// fail marks the machine failed with the cause (a provision or
// deprovision: an update leaves a working machine as it is) and records
// the step.
func (m *machineRun) fail(ctx context.Context, cause error) {
	var se *stepError
	step := Step(m.r.steps[m.name].Step)
	if errors.As(cause, &se) {
		step = se.step
	}
	m.log.Warn("machine failed", "step", step, "err", cause)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if m.change.Action != plan.Update {
		now := m.r.opts.Clock.Now()
		if _, err := inventory.UpdateMachine(wctx, m.r.store, m.name, func(rec *inventory.Machine) error {
			return rec.SetState(inventory.StateFailed, cause.Error(), now)
		}); err != nil && !errors.Is(err, inventory.ErrNotFound) {
			m.log.Error("mark machine failed", "err", err)
		}
	}
	m.event(wctx, "failed: "+cause.Error())
	m.record(wctx, step, inventory.RunFailed, cause.Error())
}

// event appends an apply event to the machine's timeline and returns its
// sequence number (0 if it could not be written).
func (m *machineRun) event(ctx context.Context, msg string) int64 {
	ev := inventory.Event{Time: m.r.opts.Clock.Now(), Machine: m.name, Kind: inventory.EventApply, Message: "run " + m.r.run.ID + ": " + msg}
	if m.decl != nil {
		ev.MAC = m.decl.MAC.String()
	}
	out, err := m.r.store.AppendEvent(ctx, ev)
	if err != nil {
		m.log.Warn("append event", "err", err)
	}
	return out.Seq
}
