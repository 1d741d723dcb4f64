// Package view renders what the verbs of metal show: plans, apply
// progress, machines, events, checks, diagnostics and tables, for people
// (text, colour, a live block on a terminal) and for scripts (JSON). The
// verbs in cmd/metal parse flags and call one package; what they print
// is here.
package view

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/metal-dev/metal/converge/plan"
)

// ANSI colors for the plan, as Terraform uses them.
const (
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	red    = "\x1b[31m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

// Plan prints a plan for people, Terraform-style.
func Plan(w io.Writer, p *plan.Plan, color bool) {
	paint := func(c, s string) string {
		if !color {
			return s
		}
		return c + s + reset
	}
	if !p.HasChanges() {
		fmt.Fprintf(w, "No changes. Site %q matches what metal observes (%d machines).\n", p.Site, p.Summary.NoOp)
		return
	}
	fmt.Fprintf(w, "metal will perform these actions on site %q:\n", p.Site)
	for _, c := range p.Changes {
		var sym, col, note string
		switch c.Action {
		case plan.Create:
			sym, col, note = "+", green, "will be provisioned"
		case plan.Update:
			sym, col, note = "~", yellow, "will be updated in place"
		case plan.Replace:
			sym, col, note = "-/+", red, "will be reprovisioned (its disk is rewritten)"
		case plan.Delete:
			sym, col, note = "-", red, "will be deprovisioned"
		default:
			continue
		}
		fmt.Fprintf(w, "\n  # machine %q %s\n", c.Machine, note)
		fmt.Fprintf(w, "  %s machine %q {\n", paint(col, sym), c.Machine)
		width := 0
		for _, a := range c.Attrs {
			width = max(width, len(a.Name))
		}
		for _, a := range c.Attrs {
			var line string
			switch {
			case a.Before == nil:
				line = fmt.Sprintf("%s %-*s = %s", paint(green, "+"), width, a.Name, show(a.After))
			case a.After == nil:
				line = fmt.Sprintf("%s %-*s = %s", paint(red, "-"), width, a.Name, show(a.Before))
			default:
				line = fmt.Sprintf("%s %-*s = %s -> %s", paint(yellow, "~"), width, a.Name, show(a.Before), show(a.After))
			}
			if a.ForcesReplace {
				line += paint(red, " # forces reprovision")
			}
			if a.Before != nil && a.Before.Pending != "" {
				line += fmt.Sprintf(" # %s pending at the BMC's next reset", strconv.Quote(a.Before.Pending))
			}
			switch {
			case a.Destroys && strings.HasPrefix(a.Name, plan.RAIDPrefix):
				line += paint(red, " # the volume is deleted, and its data: needs --allow-destroy")
			case a.Destroys:
				line += paint(red, " # a downgrade: needs --allow-destroy")
			case strings.HasPrefix(a.Name, plan.FirmwarePrefix) && a.After != nil && a.Before != nil:
				line += " # installed by the BMC from metal's HTTP server"
			case plan.IsHardware(a.Name) && a.After != nil && a.Before != nil:
				line += " # set through the BMC, then a reset"
			}
			fmt.Fprintf(w, "      %s\n", line)
		}
		fmt.Fprintln(w, "    }")
	}
	for _, f := range p.Findings {
		fmt.Fprintf(w, "\n%s machine %q: %s\n", paint(yellow, "Finding:"), f.Machine, f.Message)
	}
	s := p.Summary
	fmt.Fprintf(w, "\n%s %d to provision, %d to update, %d to reprovision, %d to deprovision.\n",
		paint(bold, "Plan:"), s.Create, s.Update, s.Replace, s.Delete)
}

func show(v *plan.Value) string {
	if v.Sensitive {
		return "(sensitive)"
	}
	if strings.HasPrefix(v.Text, "(") {
		return v.Text // a placeholder such as "(from pool)"
	}
	return strconv.Quote(v.Text)
}
