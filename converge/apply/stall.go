package apply

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// contactKinds are the events that show a powered-on machine is booting:
// a DHCP packet, a fetch from metal's HTTP server, a report of its agent.
var contactKinds = map[inventory.EventKind]bool{
	inventory.EventDHCPDiscover: true, inventory.EventDHCPOffer: true, inventory.EventDHCPAck: true,
	inventory.EventTFTP: true, inventory.EventScript: true, inventory.EventKernel: true,
	inventory.EventInitrd: true, inventory.EventImage: true, inventory.EventAgent: true,
}

// stallTimer fires BootTimeout after power-on, when the machine is to be
// checked for a first sign of life. since is the event sequence number
// after which the machine's boot counts (its intent's event); 0 (a resumed
// run, whose machine may be well into its boot) or a negative BootTimeout
// means no check.
func (m *machineRun) stallTimer(since int64) <-chan time.Time {
	if since == 0 || m.r.opts.BootTimeout < 0 {
		return nil
	}
	return m.r.opts.Clock.After(m.r.opts.BootTimeout)
}

// checkContact returns nil if the machine has shown any sign of booting
// since event since, and otherwise an error naming what was last seen of
// it and where its console is: a machine that was powered on and made no
// DHCP request fails within minutes, not when the agent's bound runs out.
func (m *machineRun) checkContact(ctx context.Context, since int64) error {
	evs, err := m.r.store.Events(ctx, inventory.EventQuery{Machine: m.name})
	if err != nil {
		m.log.Warn("read the boot timeline for the stall check", "err", err)
		return nil
	}
	var lastDHCP, lastFetch *inventory.Event
	for i := range evs {
		ev := &evs[i]
		if !contactKinds[ev.Kind] {
			continue
		}
		if ev.Seq > since {
			return nil
		}
		switch ev.Kind {
		case inventory.EventDHCPDiscover, inventory.EventDHCPOffer, inventory.EventDHCPAck:
			lastDHCP = ev
		case inventory.EventTFTP, inventory.EventScript, inventory.EventKernel, inventory.EventInitrd, inventory.EventImage:
			lastFetch = ev
		}
	}
	mac := ""
	if m.decl != nil {
		mac = " from " + m.decl.MAC.String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "powered on %s ago and not heard from since: no DHCP request%s, no TFTP or HTTP fetch, no agent report", m.r.opts.BootTimeout, mac)
	fmt.Fprintf(&b, "; last seen: BMC power %s, DHCP %s, TFTP/HTTP %s", m.powerNow(ctx), seenBefore(lastDHCP), seenBefore(lastFetch))
	m.pointAtConsole(&b, false)
	b.WriteString(" (a machine that is slow to start gets longer with --boot-timeout)")
	return &stallError{msg: b.String()}
}

// pointAtConsole says where the machine's console is, and with tail its
// last lines too (a kernel's last words show why it stopped).
func (m *machineRun) pointAtConsole(b *strings.Builder, tail bool) {
	p := ""
	if m.r.opts.ConsoleLog != nil {
		p = m.r.opts.ConsoleLog(m.name)
	}
	if p == "" {
		b.WriteString("; its console (the BMC's serial-over-LAN or screen) shows why")
		return
	}
	fmt.Fprintf(b, "; its console log: %s", p)
	if tail {
		if t := cleanConsole(fileTail(p, 4<<10)); t != "" {
			fmt.Fprintf(b, " (last lines: %s)", t)
		}
	}
}

// rebootTimer fires BootTimeout after the wait for the installed OS began,
// when a machine whose agent rebooted it is to be checked for a first sign
// of that OS. It is nil when no such sign is to be expected before the
// phone-home: metal serves no DHCP on the machine's network (the OS asks
// another server, or has a static address, as a virtual-media machine
// has), or BootTimeout is negative.
func (m *machineRun) rebootTimer() <-chan time.Time {
	if m.r.opts.BootTimeout < 0 || m.decl == nil || m.virtualMedia() {
		return nil
	}
	if n := m.r.e.site.Network(m.decl.Network); n == nil || n.Mode != site.ModeDHCP {
		return nil
	}
	return m.r.opts.Clock.After(m.r.opts.BootTimeout)
}

// checkRebooted returns nil if the machine has shown any sign of booting
// since its agent reported install task taskID done and rebooted it (or
// if that report is not in its timeline), and otherwise an error naming
// what was last seen of it and its console's last lines: an agent whose
// kernel hung on the way down is named within minutes, not when
// ready_timeout runs out.
func (m *machineRun) checkRebooted(ctx context.Context, taskID string) error {
	evs, err := m.r.store.Events(ctx, inventory.EventQuery{Machine: m.name})
	if err != nil {
		m.log.Warn("read the boot timeline for the reboot check", "err", err)
		return nil
	}
	done := "agent task " + taskID + ": " + string(inventory.AgentDone)
	var rebooted, last *inventory.Event
	for i := range evs {
		ev := &evs[i]
		switch {
		case rebooted == nil:
			if ev.Kind == inventory.EventAgent && strings.HasPrefix(ev.Message, done) {
				rebooted = ev
			}
		case contactKinds[ev.Kind]:
			return nil
		}
		if ev.Kind != inventory.EventApply {
			last = ev
		}
	}
	if rebooted == nil {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the install agent reported its install done and rebooting %s ago, and the machine was not heard from since: no DHCP request from %s, no TFTP or HTTP fetch, no phone-home",
		m.r.opts.Clock.Now().Sub(rebooted.Time).Round(time.Second), m.decl.MAC)
	fmt.Fprintf(&b, "; last seen: BMC power %s, %s at %s", m.powerNow(ctx), last.Message, last.Time.UTC().Format(time.RFC3339))
	m.pointAtConsole(&b, true)
	b.WriteString(" (an installed OS slow to start gets longer with --boot-timeout)")
	return &stallError{msg: b.String()}
}

// ConsoleLogPattern turns a path with {machine} in it into
// Options.ConsoleLog; "" gives nil (the report then points at the BMC).
func ConsoleLogPattern(pattern string) func(machine string) string {
	if pattern == "" {
		return nil
	}
	return func(machine string) string { return strings.ReplaceAll(pattern, "{machine}", machine) }
}

// stallError is a machine that made no contact after power-on.
type stallError struct{ msg string }

func (e *stallError) Error() string { return e.msg }

// powerNow asks the BMC whether the machine is on, for the stall report.
func (m *machineRun) powerNow(ctx context.Context) string {
	if m.bmc == nil {
		return "unknown (no BMC)"
	}
	ctx, cancel := context.WithTimeout(ctx, m.r.opts.StepTimeout)
	defer cancel()
	on, err := m.bmc.PowerState(ctx)
	switch {
	case err != nil:
		return fmt.Sprintf("unknown (%v)", err)
	case on:
		return "on"
	}
	return "off"
}

func seenBefore(ev *inventory.Event) string {
	if ev == nil {
		return "never"
	}
	return fmt.Sprintf("only before this power-on (%s at %s)", ev.Message, ev.Time.UTC().Format(time.RFC3339))
}
