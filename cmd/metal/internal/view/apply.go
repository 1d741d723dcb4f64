package view

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
)

// Apply shows an apply's progress: a live table on a terminal, one
// line per event otherwise, or JSON lines with --json. It implements the
// engine's hook; calls come from many goroutines.
type Apply struct {
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

// NewApply returns the view of an apply run on w: JSON lines with asJSON,
// else a live block when w is a terminal (tty), in colour with color.
func NewApply(w io.Writer, asJSON, tty, color bool) *Apply {
	v := &Apply{w: w, json: asJSON, live: tty && !asJSON, color: color, inFlight: map[string]string{}}
	if v.live {
		v.stop, v.stopped = make(chan struct{}), make(chan struct{})
		go v.redraw()
	}
	return v
}

// event is one --json progress line: the engine's Hook call as data, as
// a daemon streams it to a submitted apply.
type event = apply.Event

// Emit prints a line (text or JSON); with the live view, above the block.
func (v *Apply) Emit(e event, text string) {
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

func (v *Apply) paint(c, s string) string {
	if !v.color {
		return s
	}
	return c + s + reset
}

func (v *Apply) RunStarted(run inventory.ApplyRun, batches [][]string, acts map[string]plan.Action) {
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
	v.Emit(event{Type: "run", Run: run.ID, Canary: run.Canary, Batches: batches, Actions: acts}, fmt.Sprintf("\nApply run %s: %s.", run.ID, shape))
}

func (v *Apply) BatchStarted(i int, machines []string) {
	v.mu.Lock()
	v.batch = i
	n := v.batches
	v.mu.Unlock()
	v.Emit(event{Type: "batch", Batch: i, Machines: machines}, fmt.Sprintf("Batch %d/%d: %s", i, n, listShort(machines, 8)))
}

func (v *Apply) MachineStep(m string, s apply.Step, note string) {
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
	v.Emit(event{Type: "step", Machine: m, Step: string(s), Note: note}, text)
}

func (v *Apply) AgentReport(m string, st inventory.AgentStatus) {
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
	v.Emit(event{Type: "agent", Machine: m, Agent: &st2}, fmt.Sprintf("  %s: %s", m, what))
}

func (v *Apply) MachineDone(m string, err error) {
	v.mu.Lock()
	delete(v.inFlight, m)
	if err != nil {
		v.failed++
	} else {
		v.done++
	}
	v.mu.Unlock()
	if err != nil {
		v.Emit(event{Type: "failed", Machine: m, Error: err.Error()}, fmt.Sprintf("  %s: %s %v", m, v.paint(red, "FAILED"), err))
		return
	}
	if v.live {
		return
	}
	v.Emit(event{Type: "done", Machine: m}, fmt.Sprintf("  %s: %s", m, v.paint(green, "done")))
}

func (v *Apply) Halted(reason string) {
	v.Emit(event{Type: "halted", Error: reason}, v.paint(red, "Halted: ")+reason+"; no more machines start.")
}

func (v *Apply) RunFinished(res apply.Result) {
	text := fmt.Sprintf("\n%s %d done, %d failed, %d not started (run %s, %s).",
		v.paint(bold, "Apply:"), len(res.Done), len(res.Failed), len(res.NotStarted), res.RunID, res.State)
	for _, m := range res.Failed {
		text += fmt.Sprintf("\n  %s: %s", m, res.Errors[m])
	}
	if res.State == inventory.RunInterrupted {
		text += "\nContinue it with `metal apply --resume`."
	}
	r := res
	v.Emit(event{Type: "finished", Run: res.RunID, Result: &r}, text)
}

// redraw refreshes the live block a few times a second.
func (v *Apply) redraw() {
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
func (v *Apply) clearLocked() {
	if v.drawn > 0 {
		fmt.Fprintf(v.w, "\x1b[%dA\x1b[J", v.drawn)
		v.drawn = 0
	}
}

// maxLiveRows bounds the machines the live block lists.
const maxLiveRows = 12

func (v *Apply) drawLocked() {
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

// Close stops the live view.
func (v *Apply) Close() {
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
