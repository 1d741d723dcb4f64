package apply_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
)

// readyTimeout sets the image os's ready_timeout to the shortest allowed.
func readyTimeout(src string) string {
	return strings.Replace(src, "image \"os\" {\n", "image \"os\" {\n  ready_timeout = \"10s\"\n", 1)
}

// A canary whose image is written but whose OS never comes up is failed
// once ready_timeout passes, with the cause; the rollout halts before
// batch 2, and the machine is not provisioned.
func TestCanaryOSNeverComesUp(t *testing.T) {
	testenv.Long(t, "a 10 s ready_timeout waited out")
	l := newLab(t, 3, 1, 0)
	for _, n := range l.fleet.Names() {
		l.fleet.FailOS(n)
	}
	s := l.site("  canary = 1\n  batch_size = 2\n  max_failures = 5", readyTimeout)
	ctx := ctxT(t, time.Minute)
	start := time.Now()
	res := l.apply(ctx, l.engine(s, nil), s)
	if took := time.Since(start); took < 10*time.Second || took > 40*time.Second {
		t.Errorf("the run took %s, want the ready_timeout (10s) and a little", took)
	}
	if res.State != inventory.RunFailed && res.HaltReason == "" || len(res.Failed) != 1 || len(res.NotStarted) != 2 {
		t.Fatalf("result %+v, want the canary failed and the rest not started", res)
	}
	canary := res.Failed[0]
	if !strings.Contains(res.HaltReason, "canary") {
		t.Errorf("halt reason %q", res.HaltReason)
	}
	cause := res.Errors[canary]
	if !strings.Contains(cause, "did not phone home within 10s") || !strings.Contains(cause, "last seen") {
		t.Errorf("cause %q", cause)
	}
	m := l.machine(canary)
	if m.State != inventory.StateFailed || m.Ready == nil || !m.Ready.ReadyAt.IsZero() {
		t.Errorf("canary: state %s, ready %+v", m.State, m.Ready)
	}
	if n := l.fleet.Written()[canary]; n != 1 {
		t.Errorf("canary image written %d times, want 1", n)
	}
	for _, n := range res.NotStarted {
		if l.fleet.Started()[n] != 0 {
			t.Errorf("%s started after the canary failed", n)
		}
	}
}

// ready = "none" provisions without waiting for anything.
func TestReadyNone(t *testing.T) {
	l := newLab(t, 2, 1, 0)
	for _, n := range l.fleet.Names() {
		l.fleet.FailOS(n)
	}
	s := l.site("  batch_size = 2", func(src string) string {
		return strings.Replace(src, "image \"os\" {\n", "image \"os\" {\n  ready = \"none\"\n", 1)
	})
	res := l.apply(ctxT(t, 30*time.Second), l.engine(s, nil), s)
	if len(res.Done) != 2 {
		t.Fatalf("result %+v", res)
	}
}

// stepHook calls at when a machine begins step.
type stepHook struct {
	apply.Hook
	step apply.Step
	once sync.Once
	at   func(machine string)
}

func (h *stepHook) MachineStep(m string, s apply.Step, note string) {
	h.Hook.MachineStep(m, s, note)
	if s == h.step && strings.HasPrefix(note, "waiting") {
		h.once.Do(func() { h.at(m) })
	}
}

// A run stopped while a machine waits for its OS is resumed waiting for
// it, not installing it again.
func TestResumeWaitsForReady(t *testing.T) {
	l := newLab(t, 1, 1, 0)
	name := l.fleet.Names()[0]
	l.fleet.FailOS(name)
	s := l.site("  batch_size = 1", nil)
	ctx, cancel := context.WithCancel(ctxT(t, time.Minute))
	defer cancel()
	res := l.apply(ctx, l.engine(s, func(o *apply.Options) {
		o.Hook = &stepHook{Hook: o.Hook, step: apply.StepReady, at: func(string) { cancel() }}
	}), s)
	if res.State != inventory.RunInterrupted {
		t.Fatalf("first run %+v, want interrupted", res)
	}
	ctx2 := ctxT(t, time.Minute)
	phoned := make(chan bool, 1)
	res, err := l.engine(s, func(o *apply.Options) {
		o.Hook = &stepHook{Hook: o.Hook, step: apply.StepReady, at: func(m string) { go func() { phoned <- l.fleet.PhoneHomeNow(m) }() }}
	}).Resume(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	if !<-phoned {
		t.Fatal("the simulated OS's phone-home did not get through")
	}
	if len(res.Done) != 1 {
		t.Fatalf("resumed run %+v", res)
	}
	if n := l.fleet.Written()[name]; n != 1 {
		t.Errorf("image written %d times, want 1", n)
	}
	if m := l.machine(name); m.State != inventory.StateProvisioned || m.Ready.ReadyAt.IsZero() {
		t.Errorf("state %s, ready %+v", m.State, m.Ready)
	}
}
