package apply_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/inventory"
)

// TestTakeOverOrphan: a run its owner left running (killed mid-batch) is
// an orphan to every other metal but its owner; two metals taking it over
// at once race on the run's record, one resumes it to its end and the
// other is told ErrNotOrphaned, and no machine is installed twice. An
// interrupted run (stopped on purpose) is nobody's orphan.
func TestTakeOverOrphan(t *testing.T) {
	l := newLab(t, 6, 1, 300*time.Millisecond)
	s := l.site("  batch_size = 2", nil)
	ctx, cancel := context.WithCancel(ctxT(t, 30*time.Second))
	go func() {
		for len(l.fleet.AgentOrder()) < 3 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	p, err := apply.Plan(context.Background(), l.store, s)
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.engine(s, func(o *apply.Options) { o.Owner = "a" }).Apply(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	bg := ctxT(t, 30*time.Second)
	if _, ok, err := apply.Orphan(bg, l.store, "b"); err != nil || ok {
		t.Fatalf("an interrupted run is an orphan: %v %v", ok, err)
	}
	// What a killed owner leaves: the run still marked running.
	run, err := l.store.ApplyRun(bg, res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if run.Owner != "a" || run.Options.StepTimeout != 5*time.Second {
		t.Errorf("run recorded with owner %q, options %+v", run.Owner, run.Options)
	}
	run.State = inventory.RunRunning
	if _, err := l.store.PutApplyRun(bg, run); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := apply.Orphan(bg, l.store, "a"); ok {
		t.Error("a run is an orphan to its own owner")
	}
	orphan, ok, err := apply.Orphan(bg, l.store, "b")
	if err != nil || !ok || orphan.ID != res.RunID {
		t.Fatalf("orphan for b: %v %v %+v", ok, err, orphan)
	}

	var wg sync.WaitGroup
	errs := map[string]error{}
	results := map[string]apply.Result{}
	var mu sync.Mutex
	for _, who := range []string{"b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := l.engine(s, func(o *apply.Options) { o.Owner, o.TakeOver = who, &orphan }).Resume(bg)
			mu.Lock()
			errs[who], results[who] = err, r
			mu.Unlock()
		}()
	}
	wg.Wait()
	winner := ""
	for who, err := range errs {
		switch {
		case err == nil && results[who].State == inventory.RunDone && winner == "":
			winner = who
		case !errors.Is(err, apply.ErrNotOrphaned):
			t.Errorf("takeover by %s: %v, %+v", who, err, results[who])
		}
	}
	if winner == "" {
		t.Fatalf("nobody took the run over: %v", errs)
	}
	if got, _ := l.store.ApplyRun(bg, res.RunID); got.Owner != winner || got.State != inventory.RunDone {
		t.Errorf("run after the takeover: owner %q, %s; want %s, done", got.Owner, got.State, winner)
	}
	if d := cmp.Diff(ones(l.fleet.Names()), l.fleet.Installs()); d != "" {
		t.Errorf("installs per machine (-want +got):\n%s", d)
	}
}
