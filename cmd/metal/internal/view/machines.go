package view

import (
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/metal-dev/metal/internal/humanize"
	"github.com/metal-dev/metal/internal/hwinv"
	"github.com/metal-dev/metal/inventory"
)

// Machines prints the machine table of `metal machines`: a machine's
// declared address, else the one leased to its MAC (leased).
func Machines(w io.Writer, ms []inventory.Machine, leased map[string]netip.Addr, now time.Time, width int) {
	rows := [][]string{{"NAME", "MAC", "IP", "STATE", "POWER", "SINCE"}}
	for _, m := range ms {
		ip := m.Identity.IP
		if !ip.IsValid() {
			ip = leased[m.MAC]
		}
		rows = append(rows, []string{m.Name, m.MAC, addrOrDash(ip), string(orUnknown(m.State)), powerText(m.Power), age(m.Since(), now)})
	}
	Table(w, rows, width)
	if len(ms) == 0 {
		fmt.Fprintln(w, "No machines in the store yet: `metal serve` records the site's machines, and the discovery agent reports unknown ones.")
	}
}

func addrOrDash(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func orUnknown(s inventory.State) inventory.State {
	if s == "" {
		return inventory.StateUnknown
	}
	return s
}

func powerText(p inventory.PowerState) string {
	if p == inventory.PowerUnknown {
		return "?"
	}
	return string(p)
}

// age is how long ago t was, short ("45s", "12m", "3h", "4d"); "-" for never.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// Table prints rows in aligned columns. With width > 0 the table is
// kept within it: the first column (names, the only free-length one) is
// cut with "…" as far as needed, never below 8 characters.
func Table(w io.Writer, rows [][]string, width int) {
	if len(rows) == 0 {
		return
	}
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	if width > 0 {
		total := 2 * (len(widths) - 1)
		for _, n := range widths {
			total += n
		}
		if over := total - width; over > 0 {
			widths[0] = max(8, widths[0]-over)
		}
	}
	var b strings.Builder
	for _, r := range rows {
		b.Reset()
		for i, c := range r {
			if n := utf8.RuneCountInString(c); n > widths[i] {
				c = string([]rune(c)[:widths[i]-1]) + "…"
			}
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

// MachineList is the --json form of `metal machines`, the same shape as
// the daemon API's GET /api/v1/machines.
type MachineList struct {
	Machines []inventory.Machine `json:"machines"`
}

// NewMachineDetail is what `metal machines show` tells of det: a
// discovered machine with the block that would declare it.
func NewMachineDetail(det inventory.Detail) MachineDetail {
	d := MachineDetail{Machine: det.Machine, Removed: det.Removed, Lease: det.Lease, Erasures: det.Erasures, Events: det.Events}
	if det.Machine.State == inventory.StateDiscovered {
		d.Adopt = AdoptHCL(det.Machine, det.Lease)
	}
	return d
}

// MachineDetail is the --json form of `metal machines show`.
type MachineDetail struct {
	Machine inventory.Machine `json:"machine"`
	Lease   *inventory.Lease  `json:"lease,omitempty"`
	Events  []inventory.Event `json:"events"`
	// Adopt is the machine block that declares a discovered machine.
	Adopt string `json:"adopt_hcl,omitempty"`
	// Erasures are the machine's erase events (one per disk of each
	// wipe), all of them, oldest first.
	Erasures []inventory.Event `json:"erasures,omitempty"`
	// Removed says the machine is no longer in the store (deprovisioned):
	// only its events are left.
	Removed bool `json:"removed,omitempty"`
	// ConsoleTail is the last lines of the console log metal serve keeps
	// of the machine, oldest first.
	ConsoleTail []string `json:"console_tail,omitempty"`
}

// Machine prints everything known of one machine for people.
func Machine(w io.Writer, d MachineDetail, now time.Time) {
	m := d.Machine
	kv := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-14s %s\n", k+":", v)
		}
	}
	if d.Removed {
		fmt.Fprintf(w, "Machine %s: removed from the store (deprovisioned); its events remain\n", m.Name)
		erasures(w, d.Erasures)
		lastEvents(w, d.Events)
		return
	}
	fmt.Fprintf(w, "Machine %s\n", m.Name)
	kv("MAC", m.MAC)
	kv("State", fmt.Sprintf("%s (since %s)", orUnknown(m.State), when(m.Since(), now)))
	if m.Power != inventory.PowerUnknown {
		kv("Power", fmt.Sprintf("%s (seen %s)", m.Power, when(m.PowerAt, now)))
	}
	id := m.Identity
	if id.IP.IsValid() {
		kv("IP", id.IP.String())
	}
	if d.Lease != nil {
		state := "until " + d.Lease.Expiry.Local().Format(time.DateTime)
		if d.Lease.Expired(now) {
			state = "expired " + d.Lease.Expiry.Local().Format(time.DateTime)
		}
		kv("Lease", fmt.Sprintf("%s %s", d.Lease.IP, state))
	}
	kv("Network", id.Network)
	kv("Hostname", id.Hostname)
	kv("Image", id.Image)
	kv("BMC", id.BMCAddress)
	kv("Serial", id.Serial)
	if len(id.Labels) > 0 {
		kv("Labels", labelsText(id.Labels))
	}

	if hw := m.Hardware; hw != nil {
		fmt.Fprintf(w, "\nHardware (reported %s)\n", when(hw.ReportedAt, now))
		if hw.CPU.Model != "" || hw.CPU.Cores > 0 {
			kv("CPU", fmt.Sprintf("%s, %d sockets, %d cores, %d threads", orDash(hw.CPU.Model), hw.CPU.Sockets, hw.CPU.Cores, hw.CPU.Threads))
		}
		if hw.MemoryBytes > 0 {
			kv("Memory", Bytes(hw.MemoryBytes))
		}
		for _, dk := range hw.Disks {
			kind := "ssd"
			if dk.Rotational {
				kind = "hdd"
			}
			kv("Disk "+dk.Name, strings.TrimSpace(fmt.Sprintf("%s %s %s %s", Bytes(dk.SizeBytes), kind, dk.Model, dk.Serial)))
		}
		for _, n := range hw.NICs {
			speed := ""
			if n.SpeedMbps > 0 {
				speed = fmt.Sprintf(" %d Mb/s", n.SpeedMbps)
			}
			kv("NIC "+n.Name, strings.TrimSpace(fmt.Sprintf("%s%s %s", n.MAC, speed, n.Driver)))
		}
		if dmi := hw.DMI; dmi != (inventory.DMI{}) {
			kv("System", strings.Join(nonEmpty(dmi.Vendor, dmi.Product, "serial "+dmi.Serial, "BIOS "+dmi.BIOSVersion), ", "))
		}
	}

	if hw := m.BMCHardware; hw != nil {
		bmcHardware(w, *hw, now)
	}

	in := m.Intent
	fmt.Fprintf(w, "\nBoot intent\n")
	kv("Action", string(orNone(in.Action)))
	kv("Kernel", in.Kernel)
	kv("Initrds", strings.Join(in.Initrds, " "))
	kv("Cmdline", in.Cmdline)
	if t := in.Task; t != nil {
		task := fmt.Sprintf("%s (task %s)", t.Kind, t.ID)
		if t.Image != "" {
			task += fmt.Sprintf(": image %s to %s", t.Image, orDefault(t.Disk, "the first disk"))
		}
		kv("Task", task)
	}
	if ag := m.Agent; ag != nil {
		fmt.Fprintf(w, "\nAgent (report %s)\n", when(ag.UpdatedAt, now))
		kv("Task", ag.TaskID)
		kv("Phase", string(ag.Phase))
		step := ag.Step
		if ag.Total > 0 {
			step += fmt.Sprintf(" %s of %s (%d%%)", Bytes(ag.Done), Bytes(ag.Total), ag.Done*100/ag.Total)
		} else if ag.Done > 0 {
			step += " " + Bytes(ag.Done)
		}
		kv("Step", step)
		kv("Error", ag.Error)
	}

	if len(m.History) > 0 {
		fmt.Fprintf(w, "\nHistory\n")
		for _, t := range m.History {
			fmt.Fprintf(w, "  %s  %s → %s  %s\n", t.At.Local().Format(time.DateTime), t.From, t.To, t.Cause)
		}
	}
	erasures(w, d.Erasures)
	lastEvents(w, d.Events)
	consoleTail(w, d.ConsoleTail)
	if d.Adopt != "" {
		fmt.Fprintf(w, "\nThis machine was discovered, not declared. To adopt it, add to the site file\n(pick its name, address and image), then run `metal apply`:\n\n%s", d.Adopt)
	}
}

// bmcHardware prints the deep inventory the machine's BMC last reported.
func bmcHardware(w io.Writer, r hwinv.Report, now time.Time) {
	fmt.Fprintf(w, "\nBMC inventory (%s, read %s)\n", r.Source, when(r.ReadAt, now))
	line := func(k, v string) { fmt.Fprintf(w, "  %-14s %s\n", k+":", v) }
	health := func(h string) string {
		if h == "" || strings.EqualFold(h, "OK") {
			return ""
		}
		return " [" + h + "]"
	}
	line("Summary", HardwareSummary(r))
	for _, c := range r.CPUs {
		line("CPU "+c.Socket, fmt.Sprintf("%s, %d cores, %d threads%s", orDash(c.Model), c.Cores, c.Threads, health(c.Health)))
	}
	for _, d := range r.DIMMs {
		line("DIMM "+d.Name, strings.TrimSpace(fmt.Sprintf("%s %s %d MHz serial %s%s", Bytes(d.Bytes), d.Type, d.SpeedMHz, orDash(d.Serial), health(d.Health))))
	}
	for _, d := range r.Disks {
		line("Disk "+d.Name, strings.TrimSpace(fmt.Sprintf("%s %s %s %s serial %s%s", Bytes(d.Bytes), d.Media, d.Protocol, d.Model, orDash(d.Serial), health(d.Health))))
	}
	for _, n := range r.NICs {
		line("NIC "+n.Name, strings.TrimSpace(fmt.Sprintf("%s %s %d Mb/s%s", n.MAC, n.Link, n.SpeedMbps, health(n.Health))))
	}
	for _, p := range r.PSUs {
		// IPMI knows a supply only by its status sensor: no model, watts
		// or serial, only its health.
		var parts []string
		if p.Model != "" {
			parts = append(parts, p.Model)
		}
		if p.Watts > 0 {
			parts = append(parts, fmt.Sprintf("%d W", p.Watts))
		}
		if p.Serial != "" {
			parts = append(parts, "serial "+p.Serial)
		}
		v := strings.TrimSpace(strings.Join(parts, " ") + health(p.Health))
		if v == "" {
			v = orDash(p.Health)
		}
		line("PSU "+p.Name, v)
	}
	for _, f := range r.Fans {
		line("Fan "+f.Name, fmt.Sprintf("%.0f %s%s", f.Reading, f.Units, health(f.Health)))
	}
	for _, t := range r.Temperatures {
		line("Temp "+t.Name, fmt.Sprintf("%.1f °C%s", t.Reading, health(t.Health)))
	}
	for _, f := range r.Firmware {
		line("Firmware", strings.TrimSpace(fmt.Sprintf("%s %s %s", f.ID, f.Version, f.Name)))
	}
	for _, k := range slices.Sorted(maps.Keys(r.FRU)) {
		line("FRU "+k, r.FRU[k])
	}
}

// erasures prints the erase records of a machine's wipes, one line per
// disk.
func erasures(w io.Writer, evs []inventory.Event) {
	if len(evs) == 0 {
		return
	}
	fmt.Fprintf(w, "\nErase records\n")
	for _, e := range evs {
		if e.Erase != nil {
			fmt.Fprintf(w, "  %s  %s\n", e.Time.Local().Format(time.DateTime), e.Erase)
		}
	}
}

// consoleTail prints the end of the machine's console log, if there is one.
func consoleTail(w io.Writer, lines []string) {
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\nConsole (last %d lines of the log metal serve keeps)\n", len(lines))
	for _, l := range lines {
		fmt.Fprintf(w, "  | %s\n", l)
	}
}

func lastEvents(w io.Writer, evs []inventory.Event) {
	fmt.Fprintf(w, "\nLast events\n")
	if len(evs) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, e := range evs {
		fmt.Fprintf(w, "  %s\n", Event(e))
	}
}

// AdoptHCL is a machine block declaring a discovered machine.
func AdoptHCL(m inventory.Machine, lease *inventory.Lease) string {
	var b strings.Builder
	fmt.Fprintf(&b, "machine %q {\n", m.Name)
	fmt.Fprintf(&b, "  mac   = %q\n", m.MAC)
	if lease != nil {
		fmt.Fprintf(&b, "  # ip  = \"...\" # an address outside the pool; it leases %s from the pool now\n", lease.IP)
	} else {
		fmt.Fprintf(&b, "  # ip  = \"...\" # an address outside the pool, or none to lease one from it\n")
	}
	b.WriteString("  image = image.NAME\n")
	if hw := m.Hardware; hw != nil {
		if d, ok := installDisk(hw.Disks); ok {
			fmt.Fprintf(&b, "  disk  = %q # %s %s\n", "/dev/"+d.Name, Bytes(d.SizeBytes), strings.TrimSpace(d.Model))
		}
		var facts []string
		if hw.CPU.Model != "" {
			facts = append(facts, hw.CPU.Model)
		}
		if hw.MemoryBytes > 0 {
			facts = append(facts, Bytes(hw.MemoryBytes)+" memory")
		}
		if hw.DMI.Vendor != "" || hw.DMI.Product != "" {
			facts = append(facts, strings.TrimSpace(hw.DMI.Vendor+" "+hw.DMI.Product))
		}
		if len(facts) > 0 {
			fmt.Fprintf(&b, "  # %s\n", strings.Join(facts, ", "))
		}
		if hw.DMI.Serial != "" {
			fmt.Fprintf(&b, "  labels = { serial = %q }\n", hw.DMI.Serial)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// installDisk suggests the disk to install on: the smallest non-rotational
// one (a boot SSD beside data disks), else the smallest.
func installDisk(disks []inventory.Disk) (inventory.Disk, bool) {
	var best inventory.Disk
	found := false
	for _, d := range disks {
		better := !found || (!d.Rotational && best.Rotational) ||
			(d.Rotational == best.Rotational && d.SizeBytes < best.SizeBytes)
		if better {
			best, found = d, true
		}
	}
	return best, found
}

func when(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s, %s ago", t.Local().Format(time.DateTime), age(t, now))
}

func labelsText(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + l[k]
	}
	return strings.Join(keys, " ")
}

// Bytes is a size as people read it, as the console shows it too.
func Bytes(n uint64) string { return humanize.Bytes(n) }

func nonEmpty(parts ...string) []string {
	var out []string
	for _, p := range parts {
		if p != "" && p != "serial " && p != "BIOS " {
			out = append(out, p)
		}
	}
	return out
}

func orDash(s string) string { return orDefault(s, "-") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orNone(a inventory.BootAction) inventory.BootAction {
	if a == "" {
		return inventory.BootNone
	}
	return a
}
