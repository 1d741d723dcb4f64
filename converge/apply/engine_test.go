package apply_test

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/site"
)

// lab is a simulated fleet, its store and its site.
type lab struct {
	t     *testing.T
	store inventory.Store
	fleet *applytest.Fleet
	hook  *recorder
}

func newLab(t *testing.T, n, racks int, agentTime time.Duration) *lab {
	t.Helper()
	return newLabWith(t, applytest.Options{Machines: n, Racks: racks, AgentTime: agentTime, RebootAfter: 5 * time.Millisecond})
}

// newLabWith is newLab with the fleet's every option; its Store is the lab's.
func newLabWith(t *testing.T, opts applytest.Options) *lab {
	t.Helper()
	url := "file://" + t.TempDir() + "/state.db"
	if os.Getenv("APPLY_MEM") != "" {
		url = "memory://"
	}
	store, err := backend.Open(context.Background(), url, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	opts.Store = store
	f, err := applytest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return &lab{t: t, store: store, fleet: f, hook: newRecorder()}
}

func (l *lab) site(rollout string, edit func(string) string) *site.Site {
	l.t.Helper()
	// Site defaults (a canary, 2 s stagger) are for real racks; tests
	// say what they test.
	if !strings.Contains(rollout, "canary") {
		rollout += "\n  canary = 0"
	}
	if !strings.Contains(rollout, "stagger") {
		rollout += "\n  stagger = \"0s\""
	}
	src := string(l.fleet.SiteHCL("file://state.db", rollout))
	if edit != nil {
		src = edit(src)
	}
	res, diags := site.Load("site.hcl", []byte(src), site.Options{})
	if diags.HasErrors() {
		l.t.Fatalf("load site: %s", hcl.Diagnostics(diags).Error())
	}
	return res.Site
}

func (l *lab) engine(s *site.Site, tweak func(*apply.Options)) *apply.Engine {
	opts := apply.Options{
		AgentBoot: apply.AgentBoot{Kernel: "/agent/vmlinuz", Initrds: []string{"/agent/initrd"}, Cmdline: "console=ttyS0"},
		ImageURL:  func(image string) string { return "http://192.0.2.1:8080/images/" + image + "/disk" },
		ReadyURL:  l.fleet.ReadyURL,
		BMC: apply.DriverBMCs(nil, func(c *bmc.Config) {
			c.Timeout, c.Retries, c.PowerWait = 3*time.Second, 1, 3*time.Second
		}),
		StepTimeout: 5 * time.Second, Retries: 2, RetryDelay: 10 * time.Millisecond,
		AgentTimeout: 20 * time.Second, PollInterval: 50 * time.Millisecond,
		Hook: l.hook,
	}
	if os.Getenv("APPLY_LOG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if tweak != nil {
		tweak(&opts)
	}
	return apply.New(s, l.store, opts)
}

// apply plans s against the store and applies the plan.
func (l *lab) apply(ctx context.Context, e *apply.Engine, s *site.Site) apply.Result {
	l.t.Helper()
	p, err := apply.Plan(ctx, l.store, s)
	if err != nil {
		l.t.Fatal(err)
	}
	res, err := e.Apply(ctx, p)
	if err != nil {
		l.t.Fatal(err)
	}
	return res
}

func (l *lab) machine(name string) inventory.Machine {
	l.t.Helper()
	m, err := l.store.Machine(context.Background(), name)
	if err != nil {
		l.t.Fatal(err)
	}
	return m
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// recorder is a Hook that keeps what it is told.
type recorder struct {
	apply.NopHook
	mu       sync.Mutex
	batches  [][]string
	started  map[string]time.Time // first step
	finished map[string]time.Time
	steps    map[string][]apply.Step
	halted   []string
	agent    map[string][]inventory.AgentPhase
}

func newRecorder() *recorder {
	return &recorder{started: map[string]time.Time{}, finished: map[string]time.Time{}, steps: map[string][]apply.Step{}, agent: map[string][]inventory.AgentPhase{}}
}

func (r *recorder) RunStarted(_ inventory.ApplyRun, b [][]string, _ map[string]plan.Action) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = b
}

func (r *recorder) MachineStep(m string, s apply.Step, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.started[m]; !ok {
		r.started[m] = time.Now()
	}
	r.steps[m] = append(r.steps[m], s)
}

func (r *recorder) AgentReport(m string, st inventory.AgentStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.agent[m] = append(r.agent[m], st.Phase)
}

func (r *recorder) MachineDone(m string, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished[m] = time.Now()
}

func (r *recorder) Halted(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.halted = append(r.halted, reason)
}

func ones(names []string) map[string]int {
	out := map[string]int{}
	for _, n := range names {
		out[n] = 1
	}
	return out
}

// TestRollout200 applies 200 machines in 4 racks with a canary, batches of
// 20 and by = "rack": every machine is installed exactly once, no batch
// spans two racks, the canary finishes before anything else starts, and
// afterwards the plan has nothing left to do.
func TestRollout200(t *testing.T) {
	testenv.Long(t, "a rollout of 200 simulated machines")
	l := newLab(t, 200, 4, 0)
	s := l.site(`  canary = 1
  batch_size = 20
  by = "rack"
  stagger = "1ms"`, nil)
	ctx := ctxT(t, 60*time.Second)
	res := l.apply(ctx, l.engine(s, nil), s)
	if res.State != inventory.RunDone || len(res.Done) != 200 {
		t.Fatalf("run %s: %d done, failed %v, halted %q", res.State, len(res.Done), res.Errors, res.HaltReason)
	}
	if d := cmp.Diff(ones(l.fleet.Names()), l.fleet.Installs()); d != "" {
		t.Errorf("installs per machine (-want +got):\n%s", d)
	}

	// Batches as recorded in the store: the canary alone, then never two
	// racks in one batch, at most 20 machines.
	run, err := l.store.ApplyRun(ctx, res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	racks := map[int]map[string]bool{}
	sizes := map[int]int{}
	for name, st := range run.Steps {
		if st.State != inventory.RunDone {
			t.Errorf("%s: step %s %s", name, st.Step, st.State)
		}
		m := l.machine(name)
		if racks[st.Batch] == nil {
			racks[st.Batch] = map[string]bool{}
		}
		racks[st.Batch][m.Identity.Labels["rack"]] = true
		sizes[st.Batch]++
	}
	if sizes[1] != 1 || run.Canary != 1 {
		t.Errorf("canary batch has %d machines (run.Canary %d), want 1", sizes[1], run.Canary)
	}
	for b, rs := range racks {
		if len(rs) != 1 || sizes[b] > 20 {
			t.Errorf("batch %d: racks %v, %d machines", b, rs, sizes[b])
		}
	}
	// 1 canary, r0's other 49 in 3 batches, 50 each in 3 batches for r1-r3.
	if len(sizes) != 1+3+3*3 {
		t.Errorf("%d batches, want 13: %v", len(sizes), sizes)
	}

	canary := l.hook.batches[0][0]
	for name, at := range l.hook.started {
		if name != canary && at.Before(l.hook.finished[canary]) {
			t.Errorf("%s started before the canary %s finished", name, canary)
		}
	}

	for _, name := range l.fleet.Names() {
		m := l.machine(name)
		if m.State != inventory.StateProvisioned || m.Identity.Image != "os" || m.Intent.Action != inventory.BootLocal || m.Intent.Task != nil {
			t.Fatalf("%s: state %s, image %q, intent %+v", name, m.State, m.Identity.Image, m.Intent)
		}
		boots := l.fleet.Sim(name).Boots()
		if len(boots) == 0 || boots[0].Target != "Pxe" || l.fleet.Sim(name).Power() != virtual.PowerOn {
			t.Fatalf("%s: boots %+v, power %s", name, boots, l.fleet.Sim(name).Power())
		}
	}
	m := l.machine(canary)
	if want := []apply.Step{apply.StepCheckBMC, apply.StepPowerOff, apply.StepIntent, apply.StepBootPXE, apply.StepPowerOn, apply.StepInstall, apply.StepLocal, apply.StepLocal, apply.StepReady, apply.StepReady}; !slices.Equal(l.hook.steps[canary], want) {
		t.Errorf("canary steps %v, want %v", l.hook.steps[canary], want)
	}
	// The agent's first call (started) and its progress are both running.
	phases := slices.Compact(slices.Clone(l.hook.agent[canary]))
	if d := cmp.Diff([]inventory.AgentPhase{inventory.AgentRunning, inventory.AgentDone}, phases); d != "" && !slices.Equal(phases, []inventory.AgentPhase{inventory.AgentDone}) {
		t.Errorf("canary agent reports (-want +got):\n%s", d)
	}
	if m.Agent == nil || m.Agent.Phase != inventory.AgentDone {
		t.Errorf("canary agent status %+v", m.Agent)
	}

	p, err := apply.Plan(ctx, l.store, s)
	if err != nil {
		t.Fatal(err)
	}
	if p.HasChanges() {
		t.Errorf("plan after apply still has changes: %+v", p.Summary)
	}
}

// TestCanaryFailureStopsEverything: the canary's agent fails, so the run
// halts with only the canary touched, and even max_failures does not let
// the rollout go on.
func TestCanaryFailureStopsEverything(t *testing.T) {
	l := newLab(t, 12, 1, 0)
	s := l.site("  canary = 1\n  batch_size = 4\n  max_failures = 5", nil)
	l.fleet.FailAgent(applytest.Name(0), "checksum mismatch")
	res := l.apply(ctxT(t, 30*time.Second), l.engine(s, nil), s)
	if res.State != inventory.RunFailed || !strings.Contains(res.HaltReason, "canary") {
		t.Fatalf("run %s, halt %q", res.State, res.HaltReason)
	}
	if d := cmp.Diff([]string{applytest.Name(0)}, res.Failed); d != "" {
		t.Errorf("failed (-want +got):\n%s", d)
	}
	if len(res.NotStarted) != 11 || len(res.Done) != 0 {
		t.Errorf("not started %d, done %d; want 11, 0", len(res.NotStarted), len(res.Done))
	}
	m := l.machine(applytest.Name(0))
	if m.State != inventory.StateFailed || !strings.Contains(m.History[len(m.History)-1].Cause, "checksum mismatch") {
		t.Errorf("canary: state %s, history %+v", m.State, m.History)
	}
	for _, name := range l.fleet.Names()[1:] {
		if b := l.fleet.Sim(name).Boots(); len(b) != 0 {
			t.Errorf("%s was booted though the canary failed: %+v", name, b)
		}
	}
	if err := res.Err(); err == nil || !strings.Contains(err.Error(), "halted") {
		t.Errorf("Err() = %v", err)
	}
}

// TestMaxFailuresHalts: with max_failures = 1, the second failure (in
// batch 2) halts the rollout; batch 2 finishes, batch 3 never starts.
func TestMaxFailuresHalts(t *testing.T) {
	l := newLab(t, 9, 1, 0)
	s := l.site("  batch_size = 3\n  max_failures = 1", nil)
	l.fleet.FailAgent(applytest.Name(1), "disk not found")
	l.fleet.FailAgent(applytest.Name(4), "disk not found")
	res := l.apply(ctxT(t, 30*time.Second), l.engine(s, nil), s)
	want := apply.Result{
		RunID: res.RunID, State: inventory.RunFailed,
		Done:       []string{"m0000", "m0002", "m0003", "m0005"},
		Failed:     []string{"m0001", "m0004"},
		NotStarted: []string{"m0006", "m0007", "m0008"},
		Errors: map[string]string{
			"m0001": "install: install agent failed: disk not found",
			"m0004": "install: install agent failed: disk not found",
		},
		HaltReason: "2 machines failed, more than max_failures = 1",
	}
	if d := cmp.Diff(want, res); d != "" {
		t.Errorf("result (-want +got):\n%s", d)
	}
}

// TestBrokenBMCFailsOnlyItsMachine: one BMC answers every call with an
// error; its machine fails at check-bmc with nothing changed, the rest
// are provisioned.
func TestBrokenBMCFailsOnlyItsMachine(t *testing.T) {
	l := newLab(t, 6, 1, 0)
	s := l.site("  max_failures = 1", nil)
	broken := applytest.Name(3)
	l.fleet.Sim(broken).SetFailure(errors.New("BMC firmware crashed"))
	res := l.apply(ctxT(t, 30*time.Second), l.engine(s, nil), s)
	if d := cmp.Diff([]string{broken}, res.Failed); d != "" || len(res.Done) != 5 {
		t.Fatalf("failed (-want +got):\n%s\ndone %v", d, res.Done)
	}
	if !strings.HasPrefix(res.Errors[broken], "check-bmc:") {
		t.Errorf("cause %q, want a check-bmc failure", res.Errors[broken])
	}
	m := l.machine(broken)
	if m.State != inventory.StateFailed || m.Intent.Action == inventory.BootInstall {
		t.Errorf("broken: state %s, intent %+v", m.State, m.Intent)
	}
	evs, err := l.store.Events(context.Background(), inventory.EventQuery{Machine: broken})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || !strings.Contains(evs[len(evs)-1].Message, "failed: check-bmc") {
		t.Errorf("events %+v", evs)
	}
	// The next plan provisions it again (failed = provision).
	p, err := apply.Plan(context.Background(), l.store, s)
	if err != nil {
		t.Fatal(err)
	}
	if p.Summary.Create != 1 || p.Summary.NoOp != 5 {
		t.Errorf("plan after: %+v", p.Summary)
	}
}

// TestReprovisionAndDeprovision: a new image is a reprovision, refused
// without AllowDestroy; a machine removed from the site is wiped by the
// agent, powered off and removed from the store.
func TestReprovisionAndDeprovision(t *testing.T) {
	l := newLab(t, 3, 1, 0)
	ctx := ctxT(t, 30*time.Second)
	s := l.site("", func(src string) string {
		i := strings.Index(src, `machine "m0002" {`) + len(`machine "m0002" {`)
		return src[:i] + "\n  wipe = \"secure\"" + src[i:]
	})
	if res := l.apply(ctx, l.engine(s, nil), s); res.State != inventory.RunDone {
		t.Fatalf("first apply: %+v", res)
	}
	// m0000 and m0001 get another image; m0002 leaves the site. The site no
	// longer declares m0002's BMC, so the test's BMC function finds it.
	s2 := l.site("", func(src string) string {
		src = strings.ReplaceAll(src, "image   = image.os\n", "image   = image.os2\n")
		i := strings.Index(src, `machine "m0002"`)
		j := strings.Index(src[i:], "\n}\n")
		return src[:i] + src[i+j+3:]
	})
	p, err := apply.Plan(ctx, l.store, s2)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]plan.Action{}
	for _, c := range p.Changes {
		got[c.Machine] = c.Action
	}
	if d := cmp.Diff(map[string]plan.Action{"m0000": plan.Replace, "m0001": plan.Replace, "m0002": plan.Delete}, got); d != "" {
		t.Fatalf("plan (-want +got):\n%s", d)
	}
	if _, err := l.engine(s2, nil).Apply(ctx, p); !errors.Is(err, apply.ErrDestroyNotAllowed) {
		t.Fatalf("apply without AllowDestroy: %v", err)
	}
	simBMC := apply.DriverBMCs(nil, func(c *bmc.Config) { c.Retries = 1 })
	bmcs := func(rec inventory.Machine, decl *site.Machine) (apply.BMC, error) {
		if decl == nil {
			decl = s.Machines[2] // the old declaration, as an operator's credentials would give
		}
		return simBMC(rec, decl)
	}
	res, err := l.engine(s2, func(o *apply.Options) { o.AllowDestroy = true; o.BMC = bmcs }).Apply(ctx, p)
	if err != nil || res.State != inventory.RunDone {
		t.Fatalf("apply: %v %+v", err, res)
	}
	if d := cmp.Diff(map[string]int{"m0000": 2, "m0001": 2, "m0002": 1}, l.fleet.Installs()); d != "" {
		t.Errorf("installs (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]int{"m0002": 1}, l.fleet.Wipes()); d != "" {
		t.Errorf("wipes (-want +got):\n%s", d)
	}
	// The wipe went by the site's wipe for m0002 while it declared it
	// (no --wipe given), and its erase record outlives its record.
	evs, err := l.store.Events(ctx, inventory.EventQuery{Machine: "m0002"})
	if err != nil {
		t.Fatal(err)
	}
	var erased []inventory.WipeMethod
	for _, e := range evs {
		if e.Kind == inventory.EventErase && e.Erase != nil {
			erased = append(erased, e.Erase.Method)
		}
	}
	if d := cmp.Diff([]inventory.WipeMethod{inventory.WipeSecure}, erased); d != "" {
		t.Errorf("erase events of m0002 (-want +got):\n%s", d)
	}
	if _, err := l.store.Machine(ctx, "m0002"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("deprovisioned machine still in the store: %v", err)
	}
	if p := l.fleet.Sim("m0002").Power(); p != virtual.PowerOff {
		t.Errorf("deprovisioned machine is %s", p)
	}
}

// TestResumeAfterAbort cancels an apply while agents are installing, then
// resumes the run: machines that finished are not touched, those whose
// agent was running are waited for, not reinstalled.
func TestResumeAfterAbort(t *testing.T) {
	l := newLab(t, 8, 1, 300*time.Millisecond)
	s := l.site("  batch_size = 4", nil)
	ctx, cancel := context.WithCancel(ctxT(t, 30*time.Second))
	go func() {
		// Abort once the second batch's agents are at work.
		for len(l.fleet.AgentOrder()) < 6 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	p, err := apply.Plan(context.Background(), l.store, s)
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.engine(s, nil).Apply(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != inventory.RunInterrupted || len(res.Done) != 4 {
		t.Fatalf("aborted run: %s, done %v, failed %v", res.State, res.Done, res.Errors)
	}
	res2, err := l.engine(s, nil).Resume(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if res2.RunID != res.RunID || res2.State != inventory.RunDone || len(res2.Done) != 8 {
		t.Fatalf("resumed run: %+v", res2)
	}
	if d := cmp.Diff(ones(l.fleet.Names()), l.fleet.Installs()); d != "" {
		t.Errorf("installs per machine (-want +got):\n%s", d)
	}
	if _, err := l.engine(s, nil).Resume(context.Background()); !errors.Is(err, apply.ErrNothingToResume) {
		t.Errorf("second resume: %v", err)
	}
}

// TestDrainStartsNothingNew: once drained, the batch in flight finishes
// and no other batch starts; the run is interrupted and resumable.
func TestDrainStartsNothingNew(t *testing.T) {
	l := newLab(t, 6, 1, 100*time.Millisecond)
	s := l.site("  batch_size = 2", nil)
	drain := make(chan struct{})
	go func() {
		for len(l.fleet.AgentOrder()) < 1 {
			time.Sleep(2 * time.Millisecond)
		}
		close(drain)
	}()
	res := l.apply(ctxT(t, 30*time.Second), l.engine(s, func(o *apply.Options) { o.Drain = drain }), s)
	if res.State != inventory.RunInterrupted || len(res.Done) != 2 || len(res.NotStarted) != 4 {
		t.Fatalf("drained run: %+v", res)
	}
	res2, err := l.engine(s, nil).Resume(ctxT(t, 30*time.Second))
	if err != nil || res2.State != inventory.RunDone {
		t.Fatalf("resume: %v %+v", err, res2)
	}
	if d := cmp.Diff(ones(l.fleet.Names()), l.fleet.Installs()); d != "" {
		t.Errorf("installs per machine (-want +got):\n%s", d)
	}
}

// TestDisklessAndUpdate: a diskless image is booted over the network for
// good (the step ends when its kernel is fetched); a power change is an
// update that powers the machine off without reinstalling.
func TestDisklessAndUpdate(t *testing.T) {
	l := newLab(t, 2, 1, 0)
	ctx := ctxT(t, 30*time.Second)
	s := l.site("", func(src string) string {
		return strings.Replace(src, "image   = image.os", "image   = image.live", 1)
	})
	if res := l.apply(ctx, l.engine(s, nil), s); res.State != inventory.RunDone {
		t.Fatalf("apply: %+v", res)
	}
	live := l.machine("m0000")
	want := inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/images/live/vmlinuz", Initrds: []string{"/images/live/initrd.img"}}
	if d := cmp.Diff(want, live.Intent); d != "" || live.State != inventory.StateProvisioned {
		t.Errorf("diskless intent (-want +got):\n%s\nstate %s", d, live.State)
	}
	if b := l.fleet.Sim("m0000").Boots(); len(b) != 1 || b[0].Enabled != "Continuous" {
		t.Errorf("diskless machine should netboot every time: %+v", b)
	}

	// m0000 stays live; m0001 is now declared off.
	s2 := l.site("", func(src string) string {
		src = strings.Replace(src, "image   = image.os", "image   = image.live", 1)
		return strings.Replace(src, "image   = image.os", "image   = image.os\n  power   = \"off\"", 1)
	})
	p, err := apply.Plan(ctx, l.store, s2)
	if err != nil {
		t.Fatal(err)
	}
	if p.Summary != (plan.Summary{Update: 1, NoOp: 1}) {
		t.Fatalf("plan: %+v", p.Summary)
	}
	if res := l.apply(ctx, l.engine(s2, nil), s2); res.State != inventory.RunDone {
		t.Fatalf("apply: %+v", res)
	}
	if got := l.fleet.Sim("m0001").Power(); got != virtual.PowerOff {
		t.Errorf("m0001 power %s after update", got)
	}
	if d := cmp.Diff(map[string]int{"m0001": 1}, l.fleet.Installs()); d != "" {
		t.Errorf("installs (-want +got):\n%s", d)
	}
}

func TestBatches(t *testing.T) {
	names := []string{"a1", "a2", "a3", "b1", "b2", "c1", "c2", "c3", "c4", "c5"}
	rack := func(n string) string { return n[:1] }
	tests := map[string]struct {
		r    site.Rollout
		want [][]string
		size int
	}{
		"all at once":  {site.Rollout{}, [][]string{names}, 0},
		"canary only":  {site.Rollout{Canary: 2}, [][]string{{"a1", "a2"}, names[2:]}, 0},
		"size":         {site.Rollout{BatchSize: 4}, [][]string{names[:4], names[4:8], names[8:]}, 4},
		"percent":      {site.Rollout{Canary: 1, BatchPercent: 30}, [][]string{{"a1"}, names[1:4], names[4:7], names[7:10]}, 3},
		"by rack":      {site.Rollout{By: "rack"}, [][]string{names[:3], names[3:5], names[5:]}, 0},
		"by rack size": {site.Rollout{Canary: 1, BatchSize: 2, By: "rack"}, [][]string{{"a1"}, {"a2", "a3"}, {"b1", "b2"}, {"c1", "c2"}, {"c3", "c4"}, {"c5"}}, 2},
		"big canary":   {site.Rollout{Canary: 4, By: "rack"}, [][]string{{"a1", "a2", "a3", "b1"}, {"b2"}, names[5:]}, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, size := apply.Batches(tc.r, names, rack)
			if d := cmp.Diff(tc.want, got); d != "" || size != tc.size {
				t.Errorf("batches (-want +got):\n%s\nsize %d, want %d", d, size, tc.size)
			}
		})
	}
}

// TestStalledMachineNamedWithinBootTimeout: a machine that is powered on
// and then shows no sign of booting (no DHCP, no fetch, no agent) fails
// once BootTimeout has passed, long before AgentTimeout, with what was
// last seen of it and where its console log is; the others provision.
func TestStalledMachineNamedWithinBootTimeout(t *testing.T) {
	l := newLab(t, 3, 1, 0)
	s := l.site("  max_failures = 1", nil)
	dead := applytest.Name(1)
	l.fleet.Dead(dead)
	e := l.engine(s, func(o *apply.Options) {
		o.BootTimeout = time.Second
		o.AgentTimeout = time.Minute
		o.ConsoleLog = func(name string) string { return "/lab/vms/" + name + "/serial.log" }
	})
	start := time.Now()
	res := l.apply(ctxT(t, 50*time.Second), e, s)
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the run took %v; the stall should be named after about a second", took)
	}
	if d := cmp.Diff([]string{dead}, res.Failed); d != "" {
		t.Fatalf("failed (-want +got):\n%s\nerrors: %v", d, res.Errors)
	}
	if len(res.Done) != 2 {
		t.Errorf("done %v; want the 2 others", res.Done)
	}
	msg := res.Errors[dead]
	for _, want := range []string{
		"install: powered on 1s ago and not heard from since",
		"no DHCP request from " + l.machine(dead).MAC,
		"BMC power on", "DHCP never", "TFTP/HTTP never",
		"its console log: /lab/vms/" + dead + "/serial.log",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	m := l.machine(dead)
	if m.State != inventory.StateFailed || !strings.Contains(m.History[len(m.History)-1].Cause, "not heard from") {
		t.Errorf("state %s, history %+v", m.State, m.History)
	}
	t.Logf("%s: %s", dead, msg)
}

// doneHook calls at (once) when machine finishes.
type doneHook struct {
	apply.Hook
	machine string
	once    sync.Once
	at      func()
}

func (h *doneHook) MachineDone(m string, err error) {
	h.Hook.MachineDone(m, err)
	if m == h.machine {
		h.once.Do(h.at)
	}
}

// TestHungRebootNamedWithinBootTimeout: on a network metal serves DHCP
// to, a machine whose agent reported its install done and rebooting, and
// of which nothing is seen since (its agent's kernel hung on the way
// down), fails once BootTimeout has passed, long before ready_timeout,
// naming the report, what was last seen and its console log's last
// lines. A machine whose OS came up (it asked for its address) but has
// not phoned home yet is not failed by that bound; it completes when it
// phones home later. On a network without metal's DHCP no OS sign is
// expected before the phone-home, so a hung machine there is left to
// ready_timeout.
func TestHungRebootNamedWithinBootTimeout(t *testing.T) {
	l := newLab(t, 3, 1, 0)
	hung, slow := applytest.Name(0), applytest.Name(1)
	l.fleet.OSAsksDHCP()
	l.fleet.HangReboot(hung)
	l.fleet.FailOS(slow)
	console := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(console, []byte("install done; rebooting\r\n[   36.596240] watchdog: BUG: soft lockup - CPU#0 stuck for 26s!\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := l.site("  batch_size = 3\n  max_failures = 1", func(src string) string {
		return strings.Replace(src, `mode   = "off"`, `mode   = "dhcp"
  relay_agents = ["192.0.2.254"]`, 1)
	})
	e := l.engine(s, func(o *apply.Options) {
		o.BootTimeout = 2 * time.Second
		o.ConsoleLog = func(string) string { return console }
		// The slow machine phones home only once the hung one was named:
		// had the bound failed it, it would not be done.
		o.Hook = &doneHook{Hook: o.Hook, machine: hung, at: func() {
			go l.fleet.PhoneHomeNow(slow)
		}}
	})
	start := time.Now()
	res := l.apply(ctxT(t, 2*time.Minute), e, s)
	if took := time.Since(start); took > time.Minute {
		t.Errorf("the run took %v; the hung machine should be named after about 2 s", took)
	}
	if d := cmp.Diff([]string{hung}, res.Failed); d != "" {
		t.Fatalf("failed (-want +got):\n%s\nerrors: %v", d, res.Errors)
	}
	if len(res.Done) != 2 {
		t.Errorf("done %v; want the slow and the healthy machine", res.Done)
	}
	msg := res.Errors[hung]
	for _, want := range []string{
		"ready: the install agent reported its install done and rebooting",
		"not heard from since: no DHCP request from " + l.machine(hung).MAC,
		"BMC power on", "agent task", "done (rebooting)",
		"its console log: " + console, "soft lockup",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if n := l.fleet.Written()[hung]; n != 1 {
		t.Errorf("hung machine's image written %d times, want 1", n)
	}
	t.Logf("%s: %s", hung, msg)

	t.Run("no DHCP from metal", func(t *testing.T) {
		testenv.Long(t, "a 10 s ready_timeout waited out")
		l := newLab(t, 1, 1, 0)
		hung := applytest.Name(0)
		l.fleet.HangReboot(hung)
		s := l.site("  batch_size = 1", readyTimeout)
		e := l.engine(s, func(o *apply.Options) { o.BootTimeout = time.Second })
		res := l.apply(ctxT(t, time.Minute), e, s)
		if msg := res.Errors[hung]; !strings.Contains(msg, "did not phone home within 10s") {
			t.Errorf("error %q, want ready_timeout's", msg)
		}
	})
}

// TestAgentCmdlineOnIPv6OnlyNetwork: a machine of an IPv6-only network
// (subnet6, no subnet) boots the agent with AgentBoot.Cmdline6, where
// metal's URL is on IPv6, and its task's image URL is on AgentBoot.BaseURL6
// (here the simulated fleet's own address, so that its phone-home, also
// rebased, reaches it); a machine of an IPv4 network keeps Cmdline and
// metal's IPv4 URLs.
func TestAgentCmdlineOnIPv6OnlyNetwork(t *testing.T) {
	l := newLab(t, 2, 1, 500*time.Millisecond)
	ctx := ctxT(t, 60*time.Second)
	s := l.site("", func(src string) string {
		src = strings.Replace(src, `network = "lan"`, `network = "v6"`+"\n  ip6     = \"2001:db8:0:1::10\"", 1)
		return src + "\nnetwork \"v6\" {\n  subnet6 = \"2001:db8:0:1::/64\"\n  mode    = \"off\"\n}\n"
	})
	const v4, v6 = "metal.url=http://192.0.2.1:8080", "metal.url=http://[2001:db8:0:1::1]:8080"
	ready, err := url.Parse(l.fleet.ReadyURL("52:54:00:00:00:01", "x"))
	if err != nil {
		t.Fatal(err)
	}
	base6 := "http://" + ready.Host
	e := l.engine(s, func(o *apply.Options) {
		o.AgentBoot.Cmdline, o.AgentBoot.Cmdline6, o.AgentBoot.BaseURL6 = v4, v6, base6
	})
	p, err := apply.Plan(ctx, l.store, s)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan apply.Result, 1)
	go func() {
		res, err := e.Apply(ctx, p)
		if err != nil {
			res.State = inventory.RunState("error: " + err.Error())
		}
		done <- res
	}()
	// The install intent lasts while the agent works: read it then.
	got, images, phoneHomes := map[string]string{}, map[string]string{}, map[string]string{}
	for len(got) < 2 {
		select {
		case res := <-done:
			t.Fatalf("apply ended (%+v) before both install intents were seen: %v", res.State, got)
		case <-time.After(5 * time.Millisecond):
		}
		for _, m := range s.Machines {
			if rec, err := l.store.Machine(ctx, m.Name); err == nil && rec.Intent.Task != nil {
				got[m.Network] = rec.Intent.Cmdline
				images[m.Network], phoneHomes[m.Network] = rec.Intent.Task.ImageURL, rec.Intent.Task.PhoneHome
			}
		}
	}
	if res := <-done; res.State != inventory.RunDone {
		t.Fatalf("apply: %+v", res)
	}
	if d := cmp.Diff(map[string]string{"lan": v4, "v6": v6}, got); d != "" {
		t.Errorf("agent command lines by network (-want +got):\n%s", d)
	}
	for network, prefix := range map[string]string{"lan": "http://192.0.2.1:8080/images/", "v6": base6 + "/images/"} {
		if !strings.HasPrefix(images[network], prefix) {
			t.Errorf("the image URL of the machine on %s is %q, want it under %s", network, images[network], prefix)
		}
	}
	if !strings.HasPrefix(phoneHomes["v6"], base6+"/") {
		t.Errorf("the phone-home URL on the IPv6-only network is %q, want it under %s", phoneHomes["v6"], base6)
	}
}
