package view

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/metal-dev/metal/bmc"
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

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
