// Package hwinv is a machine's deep hardware inventory as its BMC
// reports it: the BMC driver fills it, the state store keeps it, the plan
// compares one reading with the last (a swapped disk or NIC), and the
// command line and API show it.
package hwinv

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Report is one reading of a machine's hardware through its BMC.
type Report struct {
	// Source is the protocol it was read over: "redfish" or "ipmi".
	Source       string     `json:"source"`
	ReadAt       time.Time  `json:"read_at,omitzero"`
	CPUs         []CPU      `json:"cpus,omitempty"`
	MemoryBytes  uint64     `json:"memory_bytes,omitempty"`
	DIMMs        []DIMM     `json:"dimms,omitempty"`
	Disks        []Disk     `json:"disks,omitempty"`
	NICs         []NIC      `json:"nics,omitempty"`
	PSUs         []PSU      `json:"psus,omitempty"`
	Fans         []Sensor   `json:"fans,omitempty"`
	Temperatures []Sensor   `json:"temperatures,omitempty"`
	Firmware     []Firmware `json:"firmware,omitempty"`
	// FRU is the IPMI Field Replaceable Unit data (board, product and
	// chassis fields by name), for BMCs that speak only IPMI.
	FRU map[string]string `json:"fru,omitempty"`
}

type CPU struct {
	Socket  string `json:"socket,omitempty"`
	Model   string `json:"model,omitempty"`
	Cores   int    `json:"cores,omitempty"`
	Threads int    `json:"threads,omitempty"`
	Health  string `json:"health,omitempty"`
}

type DIMM struct {
	Name     string `json:"name,omitempty"`
	Bytes    uint64 `json:"bytes,omitempty"`
	Type     string `json:"type,omitempty"`
	SpeedMHz int    `json:"speed_mhz,omitempty"`
	Serial   string `json:"serial,omitempty"`
	Health   string `json:"health,omitempty"`
}

type Disk struct {
	Name     string `json:"name,omitempty"`
	Model    string `json:"model,omitempty"`
	Serial   string `json:"serial,omitempty"`
	Bytes    uint64 `json:"bytes,omitempty"`
	Media    string `json:"media,omitempty"`    // SSD, HDD
	Protocol string `json:"protocol,omitempty"` // SATA, SAS, NVMe
	Health   string `json:"health,omitempty"`
}

type NIC struct {
	Name      string `json:"name,omitempty"`
	MAC       string `json:"mac,omitempty"`
	Link      string `json:"link,omitempty"` // LinkUp, LinkDown, NoLink
	SpeedMbps int    `json:"speed_mbps,omitempty"`
	Health    string `json:"health,omitempty"`
}

type PSU struct {
	Name   string `json:"name,omitempty"`
	Model  string `json:"model,omitempty"`
	Serial string `json:"serial,omitempty"`
	Watts  int    `json:"watts,omitempty"`
	Health string `json:"health,omitempty"`
}

// Sensor is a fan (Reading in RPM) or a temperature (in °C).
type Sensor struct {
	Name    string  `json:"name"`
	Reading float64 `json:"reading"`
	Units   string  `json:"units,omitempty"`
	Health  string  `json:"health,omitempty"`
}

type Firmware struct {
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"`
	Version    string `json:"version"`
	Updateable bool   `json:"updateable,omitempty"`
}

// Unhealthy lists the parts whose health is reported and not OK.
func (r Report) Unhealthy() []string {
	var out []string
	add := func(kind, name, health string) {
		if health != "" && !strings.EqualFold(health, "OK") {
			out = append(out, fmt.Sprintf("%s %s: %s", kind, name, health))
		}
	}
	for _, c := range r.CPUs {
		add("CPU", c.Socket, c.Health)
	}
	for _, d := range r.DIMMs {
		add("DIMM", d.Name, d.Health)
	}
	for _, d := range r.Disks {
		add("disk", d.Name, d.Health)
	}
	for _, n := range r.NICs {
		add("NIC", n.Name, n.Health)
	}
	for _, p := range r.PSUs {
		add("PSU", p.Name, p.Health)
	}
	for _, f := range r.Fans {
		add("fan", f.Name, f.Health)
	}
	for _, t := range r.Temperatures {
		add("temperature", t.Name, t.Health)
	}
	return out
}

// Drift lists what changed between the last reading (was) and this one
// in the parts that identify a machine: disks by serial, NICs by MAC,
// DIMMs by serial, PSUs by serial, and the FRU's chassis, board and
// product serials. A swapped disk is one serial gone and
// another come.
func Drift(was, now Report) []string {
	var out []string
	diff := func(kind string, a, b []string) {
		gone, came := missing(a, b), missing(b, a)
		switch {
		case len(gone) > 0 && len(came) > 0:
			out = append(out, fmt.Sprintf("%s swapped: %s gone, %s new", kind, strings.Join(gone, ", "), strings.Join(came, ", ")))
		case len(gone) > 0:
			out = append(out, fmt.Sprintf("%s gone: %s", kind, strings.Join(gone, ", ")))
		case len(came) > 0:
			out = append(out, fmt.Sprintf("%s new: %s", kind, strings.Join(came, ", ")))
		}
	}
	diff("disk", keys(was.Disks, func(d Disk) string { return d.Serial }), keys(now.Disks, func(d Disk) string { return d.Serial }))
	diff("NIC", keys(was.NICs, func(n NIC) string { return strings.ToLower(n.MAC) }), keys(now.NICs, func(n NIC) string { return strings.ToLower(n.MAC) }))
	diff("DIMM", keys(was.DIMMs, func(d DIMM) string { return d.Serial }), keys(now.DIMMs, func(d DIMM) string { return d.Serial }))
	diff("PSU", keys(was.PSUs, func(p PSU) string { return p.Serial }), keys(now.PSUs, func(p PSU) string { return p.Serial }))
	// An IPMI-only machine tells its parts by the FRU's serials: a new
	// board serial is a board swapped.
	for _, k := range []string{"Chassis Serial", "Board Serial", "Product Serial"} {
		if a, b := was.FRU[k], now.FRU[k]; a != "" && b != "" && a != b {
			out = append(out, fmt.Sprintf("FRU %s was %s, is %s", k, a, b))
		}
	}
	return out
}

// keys are the non-empty identifiers of xs, sorted.
func keys[T any](xs []T, id func(T) string) []string {
	var out []string
	for _, x := range xs {
		if k := id(x); k != "" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// missing is what of a is not in b (both sorted).
func missing(a, b []string) []string {
	var out []string
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			out = append(out, x)
		}
	}
	return out
}

// Sort puts every list in a stable order (by name; NICs by MAC): BMCs,
// and clients that read collection members concurrently, give them in
// any order.
func (r *Report) Sort() {
	by := func(a, b string) int { return strings.Compare(a, b) }
	slices.SortStableFunc(r.CPUs, func(a, b CPU) int { return by(a.Socket, b.Socket) })
	slices.SortStableFunc(r.DIMMs, func(a, b DIMM) int { return by(a.Name, b.Name) })
	slices.SortStableFunc(r.Disks, func(a, b Disk) int { return by(a.Name, b.Name) })
	slices.SortStableFunc(r.NICs, func(a, b NIC) int { return by(a.MAC+a.Name, b.MAC+b.Name) })
	slices.SortStableFunc(r.PSUs, func(a, b PSU) int { return by(a.Name, b.Name) })
	slices.SortStableFunc(r.Fans, func(a, b Sensor) int { return by(a.Name, b.Name) })
	slices.SortStableFunc(r.Temperatures, func(a, b Sensor) int { return by(a.Name, b.Name) })
	slices.SortStableFunc(r.Firmware, func(a, b Firmware) int { return by(a.ID, b.ID) })
}
