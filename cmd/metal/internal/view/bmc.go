package view

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/internal/hwinv"
)

// BMCResults prints what each machine's BMC answered, and how many failed
// (on stderr).
func BMCResults(stdout, stderr io.Writer, results []bmc.Result) {
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tBMC\tPROTOCOL\tPOWER\tRESULT")
	failed := 0
	for _, r := range results {
		result := "ok"
		if r.Error != "" {
			result = "FAILED: " + r.Error
			failed++
		} else if r.Inventory != nil {
			inv := r.Inventory
			result = strings.TrimSpace(fmt.Sprintf("%s %s serial %s BIOS %s NICs %s", inv.Manufacturer, inv.Model, inv.Serial, inv.BIOSVersion, strings.Join(inv.MACs, ",")))
			if inv.Hardware != nil {
				result += "; " + HardwareSummary(*inv.Hardware)
			}
			if len(inv.Gaps) > 0 {
				result += "; not read: " + strings.Join(inv.Gaps, "; ")
			}
		}
		proto := r.Protocol
		var via []string
		if r.Provider != "" {
			via = append(via, r.Provider)
		}
		if r.Auth != "" {
			via = append(via, r.Auth+" auth")
		}
		if len(via) > 0 {
			proto += " (" + strings.Join(via, ", ") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Machine, r.Address, proto, dash(string(r.Power)), result)
	}
	tw.Flush()
	if failed > 0 {
		fmt.Fprintf(stderr, "%d of %d machines failed.\n", failed, len(results))
	}
}

// HardwareSummary is a deep inventory on one line: "2 CPUs (56 cores),
// 64.0 GiB, 2 disks (4.9 TiB), 1 NIC, 2 PSUs, firmware BIOS 2.1.0;
// unhealthy: disk Drive 1: Critical".
func HardwareSummary(r hwinv.Report) string {
	if r.Source == bmc.ProtocolIPMI {
		return ipmiSummary(r)
	}
	cores := 0
	for _, c := range r.CPUs {
		cores += c.Cores
	}
	var disk uint64
	for _, d := range r.Disks {
		disk += d.Bytes
	}
	parts := []string{fmt.Sprintf("%s (%d cores)", plural(len(r.CPUs), "CPU"), cores)}
	if r.MemoryBytes > 0 {
		parts = append(parts, Bytes(r.MemoryBytes))
	}
	parts = append(parts, fmt.Sprintf("%s (%s)", plural(len(r.Disks), "disk"), Bytes(disk)), plural(len(r.NICs), "NIC"), plural(len(r.PSUs), "PSU"))
	var fw []string
	for _, f := range r.Firmware {
		fw = append(fw, f.ID+" "+f.Version)
	}
	if len(fw) > 0 {
		parts = append(parts, "firmware "+strings.Join(fw, ", "))
	}
	return withUnhealthy(strings.Join(parts, ", "), r)
}

// ipmiSummary is an IPMI reading on one line: IPMI sees no CPUs, disks
// or NICs, so it names only what the FRU and the sensors hold: "board
// X11-DPi serial BRD-0042, 2 PSUs, 2 fans, 2 temperatures; unhealthy:
// PSU PSU2 Status: Critical".
func ipmiSummary(r hwinv.Report) string {
	var parts []string
	if r.FRU["Board Serial"] != "" {
		parts = append(parts, strings.Join(strings.Fields("board "+r.FRU["Board Product"]+" serial "+r.FRU["Board Serial"]), " "))
	}
	parts = append(parts, plural(len(r.PSUs), "PSU"), plural(len(r.Fans), "fan"), plural(len(r.Temperatures), "temperature"))
	return withUnhealthy(strings.Join(parts, ", "), r)
}

// withUnhealthy adds to a summary the parts whose BMC says they are not
// well.
func withUnhealthy(s string, r hwinv.Report) string {
	if bad := r.Unhealthy(); len(bad) > 0 {
		s += "; unhealthy: " + strings.Join(bad, "; ")
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
