package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
)

// haltReason is what a halt records as the run's halt reason: who halted
// it and why, from the request the API or console carried out.
func haltReason(ctx context.Context) string {
	req, _ := api.RequesterFrom(ctx)
	reason := fmt.Sprintf("halted by %q", req.Who)
	if req.Who == "" {
		reason = "halted by an operator"
	}
	if req.Reason != "" {
		reason += ": " + req.Reason
	}
	return reason
}

// recordHalt writes down a reprovision an operator halted. The engine,
// whose context was cancelled, leaves such a run "interrupted" with the
// machine's step running and the machine provisioning, its install task
// still offered, as it must for `metal apply --resume` after a crash. A
// halt is not a crash: nobody resumes it. So the run ends failed with the
// halt's reason, the machine's step fails, and the machine is marked
// failed (its disk may be half written) with its task withdrawn, so an
// agent still writing learns at its next report that the task is stale.
func (o *operator) recordHalt(runID, machine, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC()
	var errs []error
	if runID != "" {
		if err := retryConflict(func() error {
			run, err := o.d.Store.ApplyRun(ctx, runID)
			if err != nil {
				return err
			}
			if st, ok := run.Steps[machine]; ok && st.State != inventory.RunDone && st.State != inventory.RunFailed {
				st.State, st.Error, st.UpdatedAt = inventory.RunFailed, reason, now
				if _, err := o.d.Store.PutApplyStep(ctx, runID, st); err != nil {
					return err
				}
			}
			run.State, run.HaltReason, run.FinishedAt = inventory.RunFailed, reason, now
			_, err = o.d.Store.PutApplyRun(ctx, run)
			return err
		}); err != nil {
			errs = append(errs, fmt.Errorf("apply run %s: %w", runID, err))
		}
	}
	rec, err := inventory.UpdateMachine(ctx, o.d.Store, machine, func(m *inventory.Machine) error {
		if m.State == inventory.StateProvisioning || m.State == inventory.StateDeprovisioning {
			if err := m.SetState(inventory.StateFailed, "reprovision "+reason+" before it finished: reprovision it again", now); err != nil {
				return err
			}
		}
		if m.Intent.Task != nil {
			m.Intent = inventory.BootIntent{Action: inventory.BootNone}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("machine %s: %w", machine, err))
	}
	msg := "reprovision " + reason
	if runID != "" {
		msg = "run " + runID + ": " + msg
	}
	if _, err := o.d.Store.AppendEvent(ctx, inventory.Event{Time: now, Machine: machine, MAC: rec.MAC,
		Kind: inventory.EventApply, Message: msg}); err != nil {
		errs = append(errs, fmt.Errorf("event: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		o.log.Error("record the halt of a reprovision", "machine", machine, "run", runID, "err", err)
		return
	}
	o.log.Warn("reprovision halted", "machine", machine, "run", runID, "reason", reason)
}

// retryConflict calls fn again when another writer got in between its
// read and its write (the engine records the run's end concurrently).
func retryConflict(fn func() error) error {
	var err error
	for range 5 {
		if err = fn(); !errors.Is(err, inventory.ErrConflict) {
			return err
		}
	}
	return err
}
