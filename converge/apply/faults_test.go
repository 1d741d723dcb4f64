package apply_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/inventory"
)

// stepsCut is the real store with a process death after n apply steps: the
// writes before it are in the store, nothing after it is.
type stepsCut struct {
	inventory.Store
	left atomic.Int32
}

var errDied = errors.New("metal was killed")

func (s *stepsCut) PutApplyStep(ctx context.Context, id string, st inventory.ApplyStep) (inventory.ApplyStep, error) {
	if s.left.Add(-1) < 0 {
		return inventory.ApplyStep{}, errDied
	}
	return s.Store.PutApplyStep(ctx, id, st)
}

// TestResumeRunRecordedInPart: metal dies while it records a new run,
// after the steps of some of its machines (a kill point of `metal apply`:
// the resume carried on with those machines only, called the run done,
// and left the others unprovisioned). The resume now says
// there is nothing to continue and marks that run failed, and a new apply
// provisions every machine once.
func TestResumeRunRecordedInPart(t *testing.T) {
	for _, cut := range []int{0, 1, 3, 5} {
		t.Run(fmt.Sprintf("after %d steps", cut), func(t *testing.T) {
			l := newLab(t, 6, 1, 0)
			s := l.site("  batch_size = 2", nil)
			ctx := ctxT(t, 60*time.Second)
			var opts apply.Options
			l.engine(s, func(o *apply.Options) { opts = *o })
			crash := &stepsCut{Store: l.store}
			crash.left.Store(int32(cut))
			p, err := apply.Plan(ctx, l.store, s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := apply.New(s, crash, opts).Apply(ctx, p); !errors.Is(err, errDied) {
				t.Fatalf("apply through the dying store: %v", err)
			}
			if n := len(l.fleet.Started()); n != 0 {
				t.Fatalf("%d machines started before the run was recorded", n)
			}

			if _, err := l.engine(s, nil).Resume(ctx); !errors.Is(err, apply.ErrNothingToResume) {
				t.Fatalf("resume of a run recorded in part: %v, want ErrNothingToResume", err)
			}
			runs, err := l.store.ApplyRuns(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(runs) != 1 || runs[0].State != inventory.RunFailed || runs[0].HaltReason == "" {
				t.Fatalf("runs after the resume: %+v", runs)
			}

			res := l.apply(ctx, l.engine(s, nil), s)
			if res.State != inventory.RunDone || len(res.Done) != 6 {
				t.Fatalf("new apply: %+v", res)
			}
			if d := cmp.Diff(ones(l.fleet.Names()), l.fleet.Installs()); d != "" {
				t.Errorf("installs per machine (-want +got):\n%s", d)
			}
			if _, err := l.engine(s, nil).Resume(ctx); !errors.Is(err, apply.ErrNothingToResume) {
				t.Errorf("resume after the new apply: %v", err)
			}
		})
	}
}

// TestApplyRefusesStalePlan: a plan made before another apply ran (one
// that waited for the apply leadership meanwhile) is refused, and nothing
// is installed twice.
func TestApplyRefusesStalePlan(t *testing.T) {
	l := newLab(t, 3, 1, 0)
	s := l.site("  batch_size = 3", nil)
	ctx := ctxT(t, 60*time.Second)
	stale, err := apply.Plan(ctx, l.store, s)
	if err != nil {
		t.Fatal(err)
	}
	if res := l.apply(ctx, l.engine(s, nil), s); res.State != inventory.RunDone {
		t.Fatalf("first apply: %+v", res)
	}
	if _, err := l.engine(s, nil).Apply(ctx, stale); !errors.Is(err, apply.ErrStalePlan) {
		t.Fatalf("apply of a stale plan: %v, want ErrStalePlan", err)
	}
	if d := cmp.Diff(ones(l.fleet.Names()), l.fleet.Installs()); d != "" {
		t.Errorf("installs per machine (-want +got):\n%s", d)
	}
}

// TestApplyRefusesMachinesInFlight: a run stops while agents install (its
// metal lost the apply leadership, or was killed); a new apply of the
// machines it left mid-install is refused, saying to resume, and the
// resume waits for those agents instead of installing again.
func TestApplyRefusesMachinesInFlight(t *testing.T) {
	l := newLab(t, 4, 1, time.Second)
	s := l.site("  batch_size = 4", nil)
	ctx, cancel := context.WithCancel(ctxT(t, 60*time.Second))
	go func() {
		for len(l.fleet.AgentOrder()) < 4 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	res := l.apply(ctx, l.engine(s, nil), s)
	if res.State != inventory.RunInterrupted {
		t.Fatalf("stopped run: %+v", res)
	}

	ctx = ctxT(t, 60*time.Second)
	p, err := apply.Plan(ctx, l.store, s)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.engine(s, nil).Apply(ctx, p)
	if !errors.Is(err, apply.ErrInFlight) || !strings.Contains(err.Error(), "m0003 (run "+res.RunID+")") {
		t.Fatalf("new apply over machines in flight: %v, want ErrInFlight naming them", err)
	}
	res, err = l.engine(s, nil).Resume(ctx)
	if err != nil || res.State != inventory.RunDone {
		t.Fatalf("resume: %+v, %v", res, err)
	}
	if d := cmp.Diff(ones(l.fleet.Names()), l.fleet.Installs()); d != "" {
		t.Errorf("installs per machine (-want +got):\n%s", d)
	}
	if d := cmp.Diff(ones(l.fleet.Names()), l.fleet.Started()); d != "" {
		t.Errorf("agents started per machine (-want +got):\n%s", d)
	}
}

// dyingStore is the real store of a metal that dies at the first write
// dies says: that write and every later one are lost, and the run's
// context ends, as at a kill -9.
type dyingStore struct {
	inventory.Store
	dies   func(m inventory.Machine) bool
	cancel context.CancelFunc
	dead   atomic.Bool
}

func (s *dyingStore) PutMachine(ctx context.Context, m inventory.Machine) (inventory.Machine, error) {
	if s.dead.Load() || s.dies(m) {
		if !s.dead.Swap(true) {
			s.cancel()
		}
		return inventory.Machine{}, errDied
	}
	return s.Store.PutMachine(ctx, m)
}

func (s *dyingStore) PutApplyStep(ctx context.Context, id string, st inventory.ApplyStep) (inventory.ApplyStep, error) {
	if s.dead.Load() {
		return inventory.ApplyStep{}, errDied
	}
	return s.Store.PutApplyStep(ctx, id, st)
}

func (s *dyingStore) PutApplyRun(ctx context.Context, r inventory.ApplyRun) (inventory.ApplyRun, error) {
	if s.dead.Load() {
		return inventory.ApplyRun{}, errDied
	}
	return s.Store.PutApplyRun(ctx, r)
}

func (s *dyingStore) AppendEvent(ctx context.Context, ev inventory.Event) (inventory.Event, error) {
	if s.dead.Load() {
		return inventory.Event{}, errDied
	}
	return s.Store.AppendEvent(ctx, ev)
}

// TestResumeAfterImageWritten: metal dies after the agent reported its
// install done and the machine's step says boot-local, before the
// local-disk intent is written (found by TestApplyKillPoints of `metal
// apply`: the resume started the machine over and installed it twice).
// The resume writes the intent and installs nothing again.
func TestResumeAfterImageWritten(t *testing.T) {
	l := newLab(t, 2, 1, 0)
	s := l.site("  batch_size = 2", nil)
	ctx, cancel := context.WithCancel(ctxT(t, 60*time.Second))
	defer cancel()
	var opts apply.Options
	l.engine(s, func(o *apply.Options) { opts = *o })
	dying := &dyingStore{Store: l.store, cancel: cancel, dies: func(m inventory.Machine) bool {
		return m.Name == "m0001" && m.Intent.Action == inventory.BootLocal
	}}
	p, err := apply.Plan(ctx, l.store, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply.New(s, dying, opts).Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if !dying.dead.Load() {
		t.Fatal("the store never died")
	}
	run, err := l.store.ApplyRuns(context.Background())
	if err != nil || len(run) != 1 || run[0].Steps["m0001"].Step != string(apply.StepLocal) {
		t.Fatalf("the dead run's steps: %+v, %v", run, err)
	}

	res, err := l.engine(s, nil).Resume(ctxT(t, 60*time.Second))
	if err != nil || res.State != inventory.RunDone || len(res.Done) != 2 {
		t.Fatalf("resume: %+v, %v", res, err)
	}
	if d := cmp.Diff(ones(l.fleet.Names()), l.fleet.Installs()); d != "" {
		t.Errorf("installs per machine (-want +got):\n%s", d)
	}
	if m := l.machine("m0001"); m.State != inventory.StateProvisioned || m.Intent.Action != inventory.BootLocal {
		t.Errorf("m0001 after the resume: %s, intent %s", m.State, m.Intent.Action)
	}
}
