package apply

import (
	"errors"
	"fmt"
	"time"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
)

// Event is one Hook call as data: what `metal apply --json` prints, one
// per line, and what a daemon streams to the `metal apply` that submitted
// a run to it, which replays them into its own view.
type Event struct {
	Time time.Time `json:"time"`
	// Type is run, batch, step, agent, done, failed, halted or finished
	// for the Hook's calls; notice (Note says what) and error (the run
	// could not go on: Error says why) come only from a daemon.
	Type    string `json:"type"`
	Run     string `json:"run,omitempty"`
	Batch   int    `json:"batch,omitempty"`
	Machine string `json:"machine,omitempty"`
	Step    string `json:"step,omitempty"`
	Note    string `json:"note,omitempty"`
	Error   string `json:"error,omitempty"`
	// Machines lists a batch's machines.
	Machines []string               `json:"machines,omitempty"`
	Agent    *inventory.AgentStatus `json:"agent,omitempty"`
	Result   *Result                `json:"result,omitempty"`
	// The run's shape, on the run event.
	Canary  int                    `json:"canary,omitempty"`
	Batches [][]string             `json:"batches,omitempty"`
	Actions map[string]plan.Action `json:"actions,omitempty"`
}

// Event types that are not Hook calls.
const (
	EventNotice = "notice"
	EventError  = "error"
)

// EventHook is a Hook that turns each call into an Event for emit, which
// must be safe to call from many goroutines.
type EventHook struct{ Emit func(Event) }

func (h EventHook) emit(e Event) {
	e.Time = time.Now().UTC()
	h.Emit(e)
}

func (h EventHook) RunStarted(run inventory.ApplyRun, batches [][]string, actions map[string]plan.Action) {
	h.emit(Event{Type: "run", Run: run.ID, Canary: run.Canary, Batches: batches, Actions: actions})
}

func (h EventHook) BatchStarted(i int, machines []string) {
	h.emit(Event{Type: "batch", Batch: i, Machines: machines})
}

func (h EventHook) MachineStep(m string, s Step, note string) {
	h.emit(Event{Type: "step", Machine: m, Step: string(s), Note: note})
}

func (h EventHook) AgentReport(m string, st inventory.AgentStatus) {
	h.emit(Event{Type: "agent", Machine: m, Agent: &st})
}

func (h EventHook) MachineDone(m string, err error) {
	if err != nil {
		h.emit(Event{Type: "failed", Machine: m, Error: err.Error()})
		return
	}
	h.emit(Event{Type: "done", Machine: m})
}

func (h EventHook) Halted(reason string) { h.emit(Event{Type: "halted", Error: reason}) }

func (h EventHook) RunFinished(res Result) {
	h.emit(Event{Type: "finished", Run: res.RunID, Result: &res})
}

// Replay makes the Hook call e stands for on h. Events that are not Hook
// calls (notice, error) and unknown types are left to the caller; Replay
// reports whether it handled e.
func (e Event) Replay(h Hook) (bool, error) {
	switch e.Type {
	case "run":
		h.RunStarted(inventory.ApplyRun{ID: e.Run, Canary: e.Canary}, e.Batches, e.Actions)
	case "batch":
		h.BatchStarted(e.Batch, e.Machines)
	case "step":
		h.MachineStep(e.Machine, Step(e.Step), e.Note)
	case "agent":
		if e.Agent == nil {
			return false, fmt.Errorf("agent event of %s without a status", e.Machine)
		}
		h.AgentReport(e.Machine, *e.Agent)
	case "done":
		h.MachineDone(e.Machine, nil)
	case "failed":
		h.MachineDone(e.Machine, errors.New(e.Error))
	case "halted":
		h.Halted(e.Error)
	case "finished":
		if e.Result == nil {
			return false, errors.New("finished event without a result")
		}
		h.RunFinished(*e.Result)
	default:
		return false, nil
	}
	return true, nil
}
