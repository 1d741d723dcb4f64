// Package runner carries out one apply run the same way for every caller:
// plan (unless resuming), let the caller approve, take the site's apply
// leadership, start what the machines boot from, run the engine. `metal
// apply` running in-process and `metal serve` running a submitted apply
// each bring their own View (what Terraform's local backend does with its
// views), so the sequence and its guards live here once.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// Operation is one apply run to carry out.
type Operation struct {
	Site  *site.Site
	Store inventory.Store
	// Resume continues the site's interrupted run instead of planning a
	// new one.
	Resume bool
	// Targets limits the plan to these machines (none: every machine).
	Targets []string
	// Hardware, when set, reaches the BMCs the plan reads (Plan); without
	// it the plan is of what the store holds alone.
	Hardware apply.BMCFunc
	// Engine configures the converge engine; its Hook is the one View.Start
	// returns, and its Logger also says what stopped a run.
	Engine apply.Options
	// Serve, when set, starts what the machines boot from (the netboot
	// servers) once the run leads the site, and returns how to stop it;
	// failed is called if it fails, which stops the run.
	Serve func(ctx context.Context, failed func(error)) (stop func())
}

// View is what a caller shows of a run and how it agrees to it.
type View interface {
	// Plan is given the plan of a new run (never when resuming), before
	// anything is changed. It shows or checks it; proceed false with a nil
	// error ends the run there (nothing to do), an error refuses it.
	Plan(p *plan.Plan) (proceed bool, err error)
	// Approve is asked once the run is planned (or is a resume); an error
	// refuses it.
	Approve() error
	// Waiting is told that another apply leads the site and the run waits
	// for it to finish.
	Waiting()
	// Start is called as the engine starts and returns the hook the engine
	// reports its progress to.
	Start() apply.Hook
}

// Run carries op out, reporting to v, and returns how the run ended. A
// run the view found nothing to do in (Plan's proceed false) returns a
// done Result without a RunID, and nil.
func Run(ctx context.Context, op Operation, v View) (apply.Result, error) {
	log := op.Engine.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var p *plan.Plan
	if !op.Resume {
		machines, _, err := op.Store.Machines(ctx)
		if err != nil {
			return apply.Result{}, fmt.Errorf("read machines from the state store: %w", err)
		}
		if p, err = Plan(ctx, op.Site, machines, op.Hardware, op.Targets); err != nil {
			return apply.Result{}, err
		}
		proceed, err := v.Plan(p)
		if err != nil {
			return apply.Result{}, err
		}
		if !proceed {
			return apply.Result{State: inventory.RunDone}, nil
		}
	}
	if err := v.Approve(); err != nil {
		return apply.Result{}, err
	}

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	release, err := apply.Lead(runCtx, op.Store, v.Waiting, func() {
		log.Error("lost the site's apply leadership (the state store's session ended); stopping the run: `metal apply --resume` carries on")
		stopRun()
	})
	if err != nil {
		return apply.Result{}, err
	}
	defer release()
	if op.Serve != nil {
		stop := op.Serve(runCtx, func(err error) {
			log.Error("netboot servers failed; stopping the apply", "err", err)
			stopRun()
		})
		defer stop()
	}

	opts := op.Engine
	opts.Hook = v.Start()
	eng := apply.New(op.Site, op.Store, opts)
	var result apply.Result
	if op.Resume {
		result, err = eng.Resume(runCtx)
	} else {
		result, err = eng.Apply(runCtx, p)
	}
	switch {
	case errors.Is(err, apply.ErrNothingToResume):
		err = explained{err, "no interrupted apply run to resume; `metal apply` starts a new one"}
	case errors.Is(err, apply.ErrDestroyNotAllowed):
		err = fmt.Errorf("%w: rerun with --allow-destroy", err)
	}
	return result, err
}

// Plan is the plan of s against machines (the state store's records, read
// by whoever holds the store or through the metal serve that does),
// limited to targets (none: every machine): the one plan `metal plan`
// shows, `metal apply` confirms and the run that carries it out computes
// again, in-process or in metal serve, so their digests agree unless the
// machines changed in between. With hardware, each machine's hardware
// settings (boot mode, BIOS, firmware, RAID) are what its BMC reports,
// so a setting changed outside metal is planned back, and the deep
// inventory's drift is a finding (apply.PlanHardwareFrom); without, the
// plan is of the records alone.
func Plan(ctx context.Context, s *site.Site, machines []inventory.Machine, hardware apply.BMCFunc, targets []string) (*plan.Plan, error) {
	var p *plan.Plan
	if hardware != nil {
		p = apply.PlanHardwareFrom(ctx, machines, s, hardware)
	} else {
		p = plan.Compute(s, apply.ObservedFrom(machines, s))
	}
	return p.Only(targets)
}

// explained is an error said in the words an operator acts on, that still
// is the engine's error for errors.Is.
type explained struct {
	err error
	msg string
}

func (e explained) Error() string { return e.msg }
func (e explained) Unwrap() error { return e.err }
