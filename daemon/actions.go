package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/converge/runner"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// operator carries out the console's and API's actions (api.Actions) and
// computes the current plan (api.Planner) for the daemon's site.
type operator struct {
	d    *Daemon
	bmcs apply.BMCFunc
	// planBMCs are those the plans read (apply.PlanBMCs): the API's and
	// the console's, and a submitted apply's.
	planBMCs apply.BMCFunc
	log      *slog.Logger

	mu   sync.Mutex
	runs map[string]context.CancelFunc // reprovisions this daemon runs, by machine
	wg   sync.WaitGroup
	// ended is closed when a machine's reprovision has ended and its end
	// is recorded; halted says why an operator halted it.
	ended  map[string]chan struct{}
	halted map[string]string
}

func newOperator(d *Daemon, observe func(op, protocol string, took time.Duration, err error)) *operator {
	tune := func(c *bmc.Config) { c.Observe = observe }
	return &operator{d: d, bmcs: apply.DriverBMCs(d.log, tune), planBMCs: apply.PlanBMCs(d.log, tune), log: d.log.With("component", "actions"),
		runs: map[string]context.CancelFunc{}, ended: map[string]chan struct{}{}, halted: map[string]string{}}
}

func (o *operator) declared(name string) (*site.Machine, error) {
	for _, m := range o.d.Site().Machines {
		if m.Name == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("machine %q is not declared in the site: %w", name, inventory.ErrNotFound)
}

// Plan implements api.Planner: the site against the store, as `metal plan`
// and a submitted apply compute it (runner.Plan): the hardware settings
// (BIOS, firmware, RAID) of machines that declare them as their BMCs
// report them, so the API and the console show drift from what metal last
// applied as findings, and the change that sets it back.
func (o *operator) Plan(ctx context.Context) (*plan.Plan, error) {
	machines, _, err := o.d.Store.Machines(ctx)
	if err != nil {
		return nil, fmt.Errorf("read machines from the state store: %w", err)
	}
	return runner.Plan(ctx, o.d.Site(), machines, o.planBMCs, nil)
}

// PowerCycle implements api.Actions through the machine's BMC.
func (o *operator) PowerCycle(ctx context.Context, name string) error {
	decl, err := o.declared(name)
	if err != nil {
		return err
	}
	rec, err := o.d.Store.Machine(ctx, name)
	if err != nil {
		return err
	}
	b, err := o.bmcs(rec, decl)
	if err != nil {
		return err
	}
	if b == nil {
		return fmt.Errorf("machine %s has no bmc block in the site: power it by hand", name)
	}
	if err := b.SetPower(ctx, false); err != nil {
		return fmt.Errorf("power off %s: %w", name, err)
	}
	if err := b.SetPower(ctx, true); err != nil {
		return fmt.Errorf("power on %s: %w", name, err)
	}
	// The pages show the power the BMC reached without waiting for the
	// next poll; the cycle itself is done even if this write fails.
	now := time.Now().UTC()
	if _, err := inventory.UpdateMachine(ctx, o.d.Store, name, func(m *inventory.Machine) error {
		m.Power, m.PowerAt = inventory.PowerOn, now
		return nil
	}); err != nil {
		o.log.Warn("record power after a power cycle", "machine", name, "err", err)
	}
	return nil
}

// Reprovision implements api.Actions: the converge engine rewrites the
// machine's disk with its image, in this daemon, in the background.
func (o *operator) Reprovision(ctx context.Context, name string) error {
	decl, err := o.declared(name)
	if err != nil {
		return err
	}
	full, err := o.Plan(ctx)
	if err != nil {
		return err
	}
	p, err := full.Only([]string{name})
	if err != nil {
		return err
	}
	for i := range p.Changes {
		if p.Changes[i].Machine == name && p.Changes[i].Action != plan.Create {
			p.Changes[i].Action = plan.Replace
		}
	}
	if decl.Image == "" {
		return fmt.Errorf("machine %s has no image to provision", name)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, busy := o.runs[name]; busy {
		return api.Conflictf("machine %s is already being reprovisioned; wait for it, or halt its run", name)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	o.runs[name] = cancel
	ended := make(chan struct{})
	o.ended[name] = ended
	eng := apply.New(o.d.Site(), o.d.Store, apply.Options{
		AgentBoot:    apply.AgentBoot(o.d.Agent),
		ImageURL:     o.d.ImageURL,
		ImageStream:  o.d.ImageStream,
		ImagePath:    o.d.ImagePath,
		FirmwareURL:  o.d.FirmwareURL,
		ReadyURL:     o.d.ReadyURL,
		ReadyAlso:    o.d.readyAlso(),
		BMC:          o.bmcs,
		Media:        o.d.BootMedia,
		AllowDestroy: true,
		Logger:       o.log,
	})
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer func() {
			o.mu.Lock()
			delete(o.runs, name)
			delete(o.ended, name)
			delete(o.halted, name)
			o.mu.Unlock()
			cancel()
			close(ended)
		}()
		res, err := eng.Apply(runCtx, p)
		o.mu.Lock()
		reason := o.halted[name]
		o.mu.Unlock()
		if reason != "" {
			o.recordHalt(res.RunID, name, reason)
			return
		}
		if err == nil {
			err = res.Err()
		}
		if err != nil {
			o.log.Error("reprovision failed", "machine", name, "err", err)
			return
		}
		o.log.Info("reprovisioned", "machine", name)
	}()
	return nil
}

// HaltRollout implements api.Actions for the runs this daemon carries out:
// reprovisions from the console or API, and applies `metal apply` submitted
// to it. A run of a `metal apply` that runs its own servers belongs to that
// process: interrupt it there.
func (o *operator) HaltRollout(ctx context.Context, runID string) error {
	run, err := o.d.Store.ApplyRun(ctx, runID)
	if err != nil {
		return err
	}
	// A run `metal apply` submitted to this daemon: start no more of its
	// machines; those in flight finish.
	if sub, ok := o.d.applies.get(); ok && sub.id == runID {
		sub.drain()
		return nil
	}
	if run.State != inventory.RunRunning {
		return api.Conflictf("apply run %s is %s, not running", runID, run.State)
	}
	// A reprovision this daemon runs: its machine is stopped where it is
	// (there is no further batch to hold back) and the halt recorded;
	// the answer waits for that, so it tells how the run ended.
	o.mu.Lock()
	for name, cancel := range o.runs {
		if _, ok := run.Steps[name]; ok {
			o.halted[name] = haltReason(ctx)
			ended := o.ended[name]
			cancel()
			o.mu.Unlock()
			select {
			case <-ended:
				return nil
			case <-ctx.Done():
				return fmt.Errorf("halt of apply run %s: %w", runID, ctx.Err())
			}
		}
	}
	o.mu.Unlock()
	return errors.New("apply run " + runID + " is carried out by a `metal apply` process, not this daemon: press Ctrl-C there")
}

// wait lets reprovisions in flight end once their context is cancelled.
func (o *operator) stop() {
	o.mu.Lock()
	for _, cancel := range o.runs {
		cancel()
	}
	o.mu.Unlock()
	o.wg.Wait()
}
