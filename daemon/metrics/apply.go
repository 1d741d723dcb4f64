package metrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// Run times apply runs and their steps from the store until ctx ends: a
// run's duration is observed when it reaches a final state, a step's when
// the machine moves to another step or the step ends. Durations come
// from the records' own times (StartedAt, FinishedAt, UpdatedAt), so they
// are what the engine recorded, whatever the watch's delay. Runs already
// finished when Run starts are not counted again.
func (m *Metrics) Run(ctx context.Context) error {
	if m == nil || m.opts.Store == nil {
		<-ctx.Done()
		return nil
	}
	t := newApplyTimer(m)
	for {
		err := t.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, inventory.ErrWatchLagged) {
			return fmt.Errorf("metrics: watch apply runs: %w", err)
		}
		m.log.Info("apply watch lagged; listing again", "err", err)
	}
}

type stepKey struct{ run, machine string }

type stepMark struct {
	step  string
	state inventory.RunState
	since time.Time
}

type applyTimer struct {
	m     *Metrics
	done  map[string]bool // runs whose duration was observed (or finished before Run)
	steps map[stepKey]stepMark
}

func newApplyTimer(m *Metrics) *applyTimer {
	return &applyTimer{m: m, done: map[string]bool{}, steps: map[stepKey]stepMark{}}
}

func finished(s inventory.RunState) bool {
	return s == inventory.RunDone || s == inventory.RunFailed || s == inventory.RunInterrupted
}

// watch watches first and lists second, so nothing written in between is
// missed; what the list already showed is not counted twice.
func (t *applyTimer) watch(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := t.m.opts.Store.Watch(ctx, inventory.WatchOptions{Kinds: []inventory.Kind{inventory.KindApply}})
	if err != nil {
		return err
	}
	runs, err := t.m.opts.Store.ApplyRuns(ctx)
	if err != nil {
		return err
	}
	for _, r := range runs {
		if finished(r.State) {
			t.done[r.ID] = true
			t.forget(r.ID)
			continue
		}
		for _, s := range r.Steps {
			k := stepKey{r.ID, s.Machine}
			if _, ok := t.steps[k]; !ok {
				t.steps[k] = stepMark{s.Step, s.State, s.UpdatedAt}
			}
		}
	}
	t.m.applyWatch.Set(1)
	defer t.m.applyWatch.Set(0)
	for c := range ch {
		if c.Err != nil {
			return c.Err
		}
		switch {
		case c.Deleted:
		case c.ApplyRun != nil:
			t.run(*c.ApplyRun)
		case c.ApplyStep != nil:
			t.step(c.RunID, *c.ApplyStep)
		}
	}
	return ctx.Err()
}

func (t *applyTimer) run(r inventory.ApplyRun) {
	if !finished(r.State) || t.done[r.ID] {
		return
	}
	t.done[r.ID] = true
	t.forget(r.ID)
	if r.FinishedAt.IsZero() || r.StartedAt.IsZero() || r.FinishedAt.Before(r.StartedAt) {
		return
	}
	t.m.applyDuration.WithLabelValues(string(r.State)).Observe(r.FinishedAt.Sub(r.StartedAt).Seconds())
}

func (t *applyTimer) step(runID string, s inventory.ApplyStep) {
	if t.done[runID] {
		return
	}
	k := stepKey{runID, s.Machine}
	prev, ok := t.steps[k]
	t.steps[k] = stepMark{s.Step, s.State, s.UpdatedAt}
	if !ok || finished(prev.state) || (prev.step == s.Step && prev.state == s.State) {
		if ok && prev.step == s.Step && prev.state == s.State {
			t.steps[k] = prev // a progress write within the step: keep its start
		}
		return
	}
	if prev.step == s.Step && !finished(s.State) {
		return // pending → running of the same step: still the same step
	}
	ended := s.State
	if prev.step != s.Step {
		ended = inventory.RunDone // moved on to the next step
	}
	if d := s.UpdatedAt.Sub(prev.since); d >= 0 {
		t.m.stepDuration.WithLabelValues(prev.step, string(ended)).Observe(d.Seconds())
	}
}

// forget drops the step marks of a finished run.
func (t *applyTimer) forget(runID string) {
	for k := range t.steps {
		if k.run == runID {
			delete(t.steps, k)
		}
	}
}
