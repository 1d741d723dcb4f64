package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
)

// Actions are what an operator may ask of the site from the API or the
// console. The daemon implements them over the BMC driver and the converge
// engine; they return once the request is carried out or refused.
type Actions interface {
	// PowerCycle turns the machine off and on again through its BMC.
	PowerCycle(ctx context.Context, machine string) error
	// Reprovision rewrites the machine's disk with its image.
	Reprovision(ctx context.Context, machine string) error
	// HaltRollout stops the apply run: no further batch starts.
	HaltRollout(ctx context.Context, runID string) error
}

// Planner computes the plan of the loaded site against the store, as
// `metal plan` shows it.
type Planner interface {
	Plan(ctx context.Context) (*plan.Plan, error)
}

// The actions an ActionRequest may name.
const (
	ActionPowerCycle  = "power-cycle"
	ActionReprovision = "reprovision"
	ActionHalt        = "halt"
)

// EventAction is the kind of the event recorded for every operator action,
// carried out or failed.
const EventAction inventory.EventKind = "action"

// ActionRequest is the body of POST /api/v1/actions, and what a console
// form submits.
type ActionRequest struct {
	// Action is power-cycle, reprovision or halt.
	Action string `json:"action"`
	// Machine names the machine of power-cycle and reprovision.
	Machine string `json:"machine,omitempty"`
	// Run is the apply run id of halt.
	Run string `json:"run,omitempty"`
	// Reason is recorded with the event.
	Reason string `json:"reason,omitempty"`
}

// maxReason bounds the reason kept in the event log.
const maxReason = 500

// errInvalidAction marks a request that is wrong in itself (400).
var errInvalidAction = errors.New("invalid action")

// Validate checks the request on its own, before anything is looked up.
func (r ActionRequest) Validate() error {
	switch r.Action {
	case ActionPowerCycle, ActionReprovision:
		if r.Machine == "" {
			return fmt.Errorf("%w: %s needs \"machine\"", errInvalidAction, r.Action)
		}
		if r.Run != "" {
			return fmt.Errorf("%w: %s takes \"machine\", not \"run\"", errInvalidAction, r.Action)
		}
	case ActionHalt:
		if r.Run == "" {
			return fmt.Errorf("%w: halt needs \"run\" (an apply run id)", errInvalidAction)
		}
		if r.Machine != "" {
			return fmt.Errorf("%w: halt takes \"run\", not \"machine\"", errInvalidAction)
		}
	case "":
		return fmt.Errorf("%w: \"action\" is missing (power-cycle, reprovision or halt)", errInvalidAction)
	default:
		return fmt.Errorf("%w: unknown action %q (want power-cycle, reprovision or halt)", errInvalidAction, r.Action)
	}
	if len(r.Machine) > 253 || len(r.Run) > 253 {
		return fmt.Errorf("%w: machine or run name too long", errInvalidAction)
	}
	if len(r.Reason) > maxReason {
		return fmt.Errorf("%w: reason longer than %d bytes", errInvalidAction, maxReason)
	}
	for _, s := range []string{r.Machine, r.Run, r.Reason} {
		if strings.IndexFunc(s, unicode.IsControl) >= 0 {
			return fmt.Errorf("%w: control characters are not allowed", errInvalidAction)
		}
	}
	return nil
}

// Performer carries out actions and records each as an event: the one
// path shared by the API and the console, so both check and record alike.
type Performer struct {
	Store   inventory.Store
	Actions Actions
}

// ErrNoActions is returned when the server runs without an engine to act.
var ErrNoActions = errors.New("actions are not available on this server")

// ErrConflict marks an action refused because of what is happening now (a
// reprovision of the machine already runs; the run is not running):
// Actions return it through Conflictf, the API answers 409.
var ErrConflict = errors.New("refused in the current state")

// Conflictf returns an error that says what format says and is
// ErrConflict for errors.Is.
func Conflictf(format string, args ...any) error {
	return conflict{fmt.Errorf(format, args...)}
}

type conflict struct{ error }

func (conflict) Is(target error) bool { return target == ErrConflict }
func (c conflict) Unwrap() error      { return c.error }

// Requester is who asked for an action and why, as Perform hands it to
// Actions in the context (a halt records it as the run's halt reason).
type Requester struct {
	Who    string
	Reason string
}

type requesterKey struct{}

// RequesterFrom returns the requester Perform put in ctx.
func RequesterFrom(ctx context.Context) (Requester, bool) {
	r, ok := ctx.Value(requesterKey{}).(Requester)
	return r, ok
}

// Perform checks that the machine or run exists, carries the action out
// and appends an EventAction event naming who asked and the outcome. The
// event is returned even when the action failed (with the error).
func (p Performer) Perform(ctx context.Context, who string, r ActionRequest) (inventory.Event, error) {
	if err := r.Validate(); err != nil {
		return inventory.Event{}, err
	}
	if p.Actions == nil {
		return inventory.Event{}, ErrNoActions
	}
	ev := inventory.Event{Kind: EventAction}
	var target string
	if r.Machine != "" {
		m, err := p.Store.Machine(ctx, r.Machine)
		if err != nil {
			return inventory.Event{}, fmt.Errorf("machine %q: %w", r.Machine, err)
		}
		ev.Machine, ev.MAC = m.Name, m.MAC
		target = "machine " + m.Name
	} else {
		if _, err := p.Store.ApplyRun(ctx, r.Run); err != nil {
			return inventory.Event{}, fmt.Errorf("apply run %q: %w", r.Run, err)
		}
		target = "apply run " + r.Run
	}
	var err error
	ctx = context.WithValue(ctx, requesterKey{}, Requester{Who: who, Reason: r.Reason})
	switch r.Action {
	case ActionPowerCycle:
		err = p.Actions.PowerCycle(ctx, r.Machine)
	case ActionReprovision:
		err = p.Actions.Reprovision(ctx, r.Machine)
	case ActionHalt:
		err = p.Actions.HaltRollout(ctx, r.Run)
	}
	msg := fmt.Sprintf("%s of %s by %q", r.Action, target, who)
	if r.Reason != "" {
		msg += " (reason: " + r.Reason + ")"
	}
	if err != nil {
		msg += ": failed: " + err.Error()
	} else {
		msg += ": done"
	}
	ev.Message = msg
	// The record outlives a client that hung up mid-action.
	saved, rerr := p.Store.AppendEvent(context.WithoutCancel(ctx), ev)
	if rerr != nil {
		return ev, errors.Join(err, fmt.Errorf("record action event: %w", rerr))
	}
	return saved, err
}
