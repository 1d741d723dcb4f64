package daemon

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/converge/runner"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
)

// takeoverRecheck is how often metal serve looks for an orphaned apply
// run besides watching the store's apply runs (a watch that failed is
// started again meanwhile).
const takeoverRecheck = 15 * time.Second

// takeOverApplies keeps an apply going when the metal carrying it out
// dies, for metal serves sharing an etcd store: each watches the site's
// apply runs, and on seeing the newest still running under another owner
// (apply.Orphan) stands for the site's apply leadership. The owner holds
// that leadership for the whole run, so this serve is elected only once
// the owner finished (the run is no longer running: nothing to do) or its
// etcd session expired with the run still running: then it resumes the
// run as `metal apply --resume` does, from its recorded steps (nothing is
// done twice), claiming it by a compare-and-swap on the run's record, so
// of two survivors one resumes it. With an embedded store only one metal
// opens it, and an interrupted run waits for `metal apply --resume`.
func (d *Daemon) takeOverApplies(ctx context.Context) {
	if !d.shared() {
		return
	}
	changed := make(chan struct{}, 1)
	go d.watchRuns(ctx, changed)
	tick := time.NewTicker(takeoverRecheck)
	defer tick.Stop()
	for {
		run, ok, err := apply.Orphan(ctx, d.Store, d.owner)
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Warn("looking for an orphaned apply run", "err", err)
		case ok:
			d.takeOver(ctx, run)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// shared: several metal serves may share this daemon's store (etcd).
func (d *Daemon) shared() bool {
	loc, err := backend.Parse(d.Site().Settings.State)
	return err == nil && loc.Scheme == "etcd"
}

// watchRuns signals changed (without blocking) on every change of an
// apply run's record (not of its steps), until ctx ends.
func (d *Daemon) watchRuns(ctx context.Context, changed chan<- struct{}) {
	for ctx.Err() == nil {
		ch, err := d.Store.Watch(ctx, inventory.WatchOptions{Kinds: []inventory.Kind{inventory.KindApply}})
		if err == nil {
			for c := range ch {
				if c.Err != nil {
					break
				}
				if c.ApplyRun == nil {
					continue // a step: the run's owner is unchanged
				}
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// takeOver waits for the site's apply leadership and, if run is still
// orphaned then, resumes it with the settings it was started with.
func (d *Daemon) takeOver(ctx context.Context, run inventory.ApplyRun) {
	log := d.log.With("component", "apply", "run", run.ID)
	o := run.Options
	req := ApplyRequest{Resume: true, AllowDestroy: o.AllowDestroy, Wipe: o.Wipe,
		StepTimeout: o.StepTimeout, AgentTimeout: o.AgentTimeout, BootTimeout: o.BootTimeout}
	ctx, abandon := context.WithCancel(ctx)
	defer abandon()
	drain := make(chan struct{})
	var drainOnce sync.Once
	opts := d.EngineFor(req, d.operator.bmcs, drain, log)
	opts.TakeOver = &run
	v := &takeoverView{d: d, log: log, orphan: run, waitFrom: time.Now(),
		sub: &submittedRun{drain: func() { drainOnce.Do(func() { close(drain) }) }, abandon: abandon}}
	defer v.end()
	res, err := runner.Run(ctx, runner.Operation{Site: d.Site(), Store: d.Store, Resume: true, Engine: opts}, v)
	switch {
	case errors.Is(err, apply.ErrNotOrphaned), errors.Is(err, apply.ErrNothingToResume):
		log.Debug("apply run not taken over: it finished, or another metal serve took it over", "owner", run.Owner)
	case err != nil:
		if ctx.Err() == nil {
			log.Error("taking over an orphaned apply run", "owner", run.Owner, "err", err)
		}
	case res.Err() != nil:
		log.Error("apply run taken over ended", "err", res.Err())
	default:
		log.Info("apply run taken over finished", "done", len(res.Done))
	}
}

// takeoverView is runner.View for a run this serve takes over: nobody to
// ask, progress to the log. Once the engine has claimed the run it is this
// daemon's run under way (halt from the console drains it), unless a
// submitted apply already is.
type takeoverView struct {
	apply.NopHook
	d        *Daemon
	log      *slog.Logger
	orphan   inventory.ApplyRun
	waitFrom time.Time
	sub      *submittedRun
	mu       sync.Mutex
	began    bool
}

func (v *takeoverView) Plan(*plan.Plan) (bool, error) { return true, nil }
func (v *takeoverView) Approve() error                { return nil }
func (v *takeoverView) Waiting() {
	v.log.Debug("an apply run of another metal is running; standing for the site's apply leadership should it die", "owner", v.orphan.Owner)
}
func (v *takeoverView) Start() apply.Hook { return v }

// RunStarted is the claim having succeeded: the takeover's time is said
// from the run's last recorded progress, the closest this serve knows to
// its owner's death (the owner's etcd session outlived it by its TTL).
func (v *takeoverView) RunStarted(run inventory.ApplyRun, _ [][]string, _ map[string]plan.Action) {
	silent := time.Since(lastProgress(v.orphan))
	v.log.Warn("apply run "+run.ID+" taken over by serve "+v.d.owner+" ("+v.d.BaseURL+") after "+
		silent.Round(100*time.Millisecond).String()+" without progress",
		"previous_owner", v.orphan.Owner, "unfinished", len(v.orphan.Unfinished()),
		"waited", time.Since(v.waitFrom).Round(100*time.Millisecond))
	v.sub.id = run.ID
	if _, ok := v.d.applies.begin(v.sub); ok {
		v.mu.Lock()
		v.began = true
		v.mu.Unlock()
	}
}

func (v *takeoverView) MachineDone(m string, err error) {
	if err != nil {
		v.log.Error("machine failed", "machine", m, "err", err)
		return
	}
	v.log.Info("machine done", "machine", m)
}

func (v *takeoverView) Halted(reason string) { v.log.Warn("apply run halted", "reason", reason) }

func (v *takeoverView) end() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.began {
		v.d.applies.end()
	}
}

// lastProgress is when run last recorded anything: its start or a step.
func lastProgress(run inventory.ApplyRun) time.Time {
	t := run.StartedAt
	for _, st := range run.Steps {
		if st.UpdatedAt.After(t) {
			t = st.UpdatedAt
		}
	}
	return t
}
