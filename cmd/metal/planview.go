package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
)

// ANSI colors for the plan, as Terraform uses them.
const (
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	red    = "\x1b[31m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

// renderPlan prints a plan for people, Terraform-style.
func renderPlan(w io.Writer, p *plan.Plan, color bool) {
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
			if plan.IsHardware(a.Name) && a.After != nil && a.Before != nil {
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

// applyView shows an apply's progress: a live table on a terminal, one
// line per event otherwise, or JSON lines with --json. It implements the
// engine's hook; calls come from many goroutines.
type applyView struct {
	apply.NopHook
	w     io.Writer
	json  bool
	live  bool
	color bool

	mu       sync.Mutex
	batches  int
	batch    int
	total    int
	done     int
	failed   int
	inFlight map[string]string // machine → what it does now
	drawn    int               // lines of the live block on screen
	stop     chan struct{}
	stopped  chan struct{}
}

func newApplyView(w io.Writer, asJSON, tty, color bool) *applyView {
	v := &applyView{w: w, json: asJSON, live: tty && !asJSON, color: color, inFlight: map[string]string{}}
	if v.live {
		v.stop, v.stopped = make(chan struct{}), make(chan struct{})
		go v.redraw()
	}
	return v
}

// event is one --json progress line: the engine's Hook call as data, as
// a daemon streams it to a submitted apply.
type event = apply.Event

// emit prints a line (text or JSON); with the live view, above the block.
func (v *applyView) emit(e event, text string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.json {
		e.Time = time.Now().UTC()
		b, _ := json.Marshal(e)
		fmt.Fprintf(v.w, "%s\n", b)
		return
	}
	v.clearLocked()
	fmt.Fprintln(v.w, text)
}

func (v *applyView) paint(c, s string) string {
	if !v.color {
		return s
	}
	return c + s + reset
}

func (v *applyView) RunStarted(run inventory.ApplyRun, batches [][]string, acts map[string]plan.Action) {
	v.mu.Lock()
	v.batches = len(batches)
	for _, b := range batches {
		v.total += len(b)
	}
	v.mu.Unlock()
	shape := fmt.Sprintf("%d machines in %d batches", v.total, len(batches))
	if run.Canary > 0 {
		shape += fmt.Sprintf(", the first a canary of %d", run.Canary)
	}
	v.emit(event{Type: "run", Run: run.ID, Canary: run.Canary, Batches: batches, Actions: acts}, fmt.Sprintf("\nApply run %s: %s.", run.ID, shape))
}

func (v *applyView) BatchStarted(i int, machines []string) {
	v.mu.Lock()
	v.batch = i
	n := v.batches
	v.mu.Unlock()
	v.emit(event{Type: "batch", Batch: i, Machines: machines}, fmt.Sprintf("Batch %d/%d: %s", i, n, listShort(machines, 8)))
}

func (v *applyView) MachineStep(m string, s apply.Step, note string) {
	v.mu.Lock()
	v.inFlight[m] = string(s)
	v.mu.Unlock()
	if v.live && note == "" {
		return
	}
	text := fmt.Sprintf("  %s: %s", m, s)
	if note != "" {
		text += " (" + note + ")"
	}
	v.emit(event{Type: "step", Machine: m, Step: string(s), Note: note}, text)
}

func (v *applyView) AgentReport(m string, st inventory.AgentStatus) {
	what := "agent " + string(st.Phase)
	if st.Step != "" {
		what += ", " + st.Step
	}
	if st.Total > 0 {
		what += fmt.Sprintf(" %d%%", st.Done*100/st.Total)
	}
	v.mu.Lock()
	v.inFlight[m] = what
	v.mu.Unlock()
	if v.live {
		return
	}
	st2 := st
	v.emit(event{Type: "agent", Machine: m, Agent: &st2}, fmt.Sprintf("  %s: %s", m, what))
}

func (v *applyView) MachineDone(m string, err error) {
	v.mu.Lock()
	delete(v.inFlight, m)
	if err != nil {
		v.failed++
	} else {
		v.done++
	}
	v.mu.Unlock()
	if err != nil {
		v.emit(event{Type: "failed", Machine: m, Error: err.Error()}, fmt.Sprintf("  %s: %s %v", m, v.paint(red, "FAILED"), err))
		return
	}
	if v.live {
		return
	}
	v.emit(event{Type: "done", Machine: m}, fmt.Sprintf("  %s: %s", m, v.paint(green, "done")))
}

func (v *applyView) Halted(reason string) {
	v.emit(event{Type: "halted", Error: reason}, v.paint(red, "Halted: ")+reason+"; no more machines start.")
}

func (v *applyView) RunFinished(res apply.Result) {
	text := fmt.Sprintf("\n%s %d done, %d failed, %d not started (run %s, %s).",
		v.paint(bold, "Apply:"), len(res.Done), len(res.Failed), len(res.NotStarted), res.RunID, res.State)
	for _, m := range res.Failed {
		text += fmt.Sprintf("\n  %s: %s", m, res.Errors[m])
	}
	if res.State == inventory.RunInterrupted {
		text += "\nContinue it with `metal apply --resume`."
	}
	r := res
	v.emit(event{Type: "finished", Run: res.RunID, Result: &r}, text)
}

// redraw refreshes the live block a few times a second.
func (v *applyView) redraw() {
	defer close(v.stopped)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			v.mu.Lock()
			v.clearLocked()
			v.mu.Unlock()
			return
		case <-t.C:
			v.mu.Lock()
			v.clearLocked()
			v.drawLocked()
			v.mu.Unlock()
		}
	}
}

// clearLocked erases the live block.
func (v *applyView) clearLocked() {
	if v.drawn > 0 {
		fmt.Fprintf(v.w, "\x1b[%dA\x1b[J", v.drawn)
		v.drawn = 0
	}
}

// maxLiveRows bounds the machines the live block lists.
const maxLiveRows = 12

func (v *applyView) drawLocked() {
	if v.total == 0 {
		return
	}
	lines := []string{fmt.Sprintf("Batch %d/%d · %s · %d failed · %d in flight · %d of %d",
		v.batch, v.batches, v.paint(green, fmt.Sprintf("%d done", v.done)), v.failed, len(v.inFlight), v.done+v.failed, v.total)}
	names := make([]string, 0, len(v.inFlight))
	for n := range v.inFlight {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		if i == maxLiveRows {
			lines = append(lines, fmt.Sprintf("  … and %d more", len(names)-maxLiveRows))
			break
		}
		lines = append(lines, fmt.Sprintf("  %-20s %s", n, v.inFlight[n]))
	}
	for _, l := range lines {
		fmt.Fprintln(v.w, l)
	}
	v.drawn = len(lines)
}

// close stops the live view.
func (v *applyView) close() {
	if v.live {
		close(v.stop)
		<-v.stopped
	}
}

// listShort lists up to n names, then how many more.
func listShort(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + fmt.Sprintf(" and %d more", len(names)-n)
}
