// Package apply is metal's converge engine: it carries out a plan on real
// machines through their BMCs and the inventory store, in the rollout the
// site declares (a canary alone, then batches, one failure domain at a
// time), and records every run so an interrupted one can be resumed.
//
// The engine never prints. It reports progress through a Hook; the
// terminal view, the plain log and the API stream are Hooks in their
// callers.
package apply

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// AgentBoot is how a machine netboots metal's install agent: the kernel and
// initrds as paths or URLs on metal's HTTP server, and the kernel command
// line. The daemon provides it.
type AgentBoot struct {
	Kernel  string
	Initrds []string
	Cmdline string
	// Cmdline6, when set, is the command line of a machine on an
	// IPv6-only network (subnet6 and no subnet): metal's URL there is on
	// IPv6, the only one its agent can reach.
	Cmdline6 string
	// BaseURL6 is metal's URL on IPv6 when Cmdline6 is set: the image's
	// and the phone-home URLs of such a machine are on it.
	BaseURL6 string
}

// Clock is the engine's time source; tests may pin it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Options tune the engine. BMC and, for disk images, AgentBoot and
// ImageURL are needed; the rest has defaults.
type Options struct {
	// AgentBoot is what a machine boots to install or wipe its disk.
	AgentBoot AgentBoot
	// ImageURL is the URL the agent streams a site image's disk from.
	ImageURL func(image string) string
	// ImageStream, when set, gives the checksum and format of the stream
	// the agent reads at ImageURL when they are not the site's (a qcow2
	// disk is served converted); ok false means the site's.
	ImageStream func(image string) (checksum, format string, ok bool)
	// ImagePath maps a kernel or initrd of a diskless image to the path
	// metal's HTTP server serves it at (the daemon's image cache serves
	// remote files too). Default: remote URLs as they are, local files at
	// /images/IMAGE/BASENAME.
	ImagePath func(image string, src site.Source) string
	// FirmwareURL is the URL on metal's HTTP server a BMC fetches a
	// firmware image from (the daemon serves it from its image cache).
	// Default: an http(s) image's own URL; a local file cannot be
	// served without it.
	FirmwareURL func(src site.Source) string
	// BMC gives each machine's BMC (see DriverBMCs).
	BMC BMCFunc
	// Media builds the boot CD of a machine with boot = "virtual-media".
	// Nil: such machines fail their media step.
	Media MediaFunc
	// SecureBootChain says metal serves the signed boot chain (shim and
	// GRUB); without it, a machine whose BMC says Secure Boot is on fails
	// before it netboots.
	SecureBootChain bool
	// ReadyURL is the URL the installed OS of the machine with mac posts
	// its phone-home to, with secret (the daemon's agent protocol,
	// agentapi.ReadyPath). Nil: images checked by cloud-init's
	// phone-home cannot be provisioned.
	ReadyURL func(mac, secret string) string
	// ReadyAlso, when set, gives the same phone-home at the site's other
	// metal serves (sharing the store), for the installed OS to try in
	// order when ReadyURL's serve does not answer.
	ReadyAlso func(mac, secret string) []string

	// StepTimeout bounds one attempt of a BMC step (default 2 min);
	// Retries is how often a step is tried (default 3), RetryDelay the
	// pause between tries (default 2 s).
	StepTimeout time.Duration
	Retries     int
	RetryDelay  time.Duration
	// AgentTimeout bounds the wait for the install agent or a diskless
	// boot (default 30 min).
	AgentTimeout time.Duration
	// BootTimeout bounds the wait, after power-on, for a machine's first
	// sign of booting (a DHCP packet, a fetch, an agent report); a machine
	// without one fails, naming what was last seen of it (default 3 min;
	// negative: no bound but AgentTimeout).
	BootTimeout time.Duration
	// ConsoleLog, when set, says where a machine's console log is, for
	// the report of a machine that did not boot.
	ConsoleLog func(machine string) string
	// PollInterval is how often a wait re-reads the store besides
	// watching it (default 5 s).
	PollInterval time.Duration

	// AllowDestroy permits reprovisions and deprovisions; a plan with one
	// is refused without it.
	AllowDestroy bool
	// Wipe is how a deprovision erases the machine's disks; empty takes
	// the machine's own wipe from the site (kept in its identity), and
	// without one the agent's default, inventory.WipeQuick (partition
	// tables and labels only).
	Wipe inventory.WipeMethod
	// Owner names who carries the run out, recorded on it
	// (inventory.ApplyRun.Owner). Set it only while holding the site's
	// apply leadership for the whole run (runner.Run does): another metal
	// tells a dead owner by that leadership lapsing while the run is
	// still marked running, and takes the run over (TakeOver).
	Owner string
	// TakeOver, when set, makes Resume continue only this orphan (see
	// Orphan): the site's newest run, still running and owned by
	// TakeOver.Owner. Its record changes owner by a compare-and-swap on
	// its revision, so of two metals taking it over one wins; the other,
	// like a takeover of a run that finished or moved on meanwhile, gets
	// ErrNotOrphaned with nothing changed.
	TakeOver *inventory.ApplyRun
	// Drain, once closed, stops the run from starting any more machines;
	// those in flight finish (cancel the context to abort them).
	Drain <-chan struct{}

	Clock  Clock
	Logger *slog.Logger
	Hook   Hook
}

func (o Options) withDefaults() Options {
	if o.StepTimeout <= 0 {
		o.StepTimeout = 2 * time.Minute
	}
	if o.Retries <= 0 {
		o.Retries = 3
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 2 * time.Second
	}
	if o.AgentTimeout <= 0 {
		o.AgentTimeout = 30 * time.Minute
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 3 * time.Minute
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 5 * time.Second
	}
	if o.ImageURL == nil {
		o.ImageURL = func(string) string { return "" }
	}
	if o.ImagePath == nil {
		o.ImagePath = defaultImagePath
	}
	if o.FirmwareURL == nil {
		o.FirmwareURL = func(src site.Source) string {
			if src.Remote() {
				return src.URL
			}
			return ""
		}
	}
	if o.BMC == nil {
		o.BMC = func(inventory.Machine, *site.Machine) (BMC, error) { return nil, nil }
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Hook == nil {
		o.Hook = NopHook{}
	}
	return o
}

// Step names where a machine is in its apply; they are recorded in the
// run's steps (inventory.ApplyStep.Step), in this order for a provision.
type Step string

const (
	StepPending  Step = "pending"
	StepCheckBMC Step = "check-bmc"
	StepPowerOff Step = "power-off"
	StepIntent   Step = "intent"
	StepBootPXE  Step = "boot-pxe"
	StepPowerOn  Step = "power-on"
	StepInstall  Step = "install" // waiting for the agent (or a diskless boot)
	StepLocal    Step = "boot-local"
	StepReady    Step = "ready" // waiting for the installed OS to report in
	StepPower    Step = "power" // the site's power state, last
	StepUpdate   Step = "update"
	StepWipe     Step = "wipe"
	StepRemove   Step = "remove"
	StepDone     Step = "done"
)

// Hook is told of a run's progress. Calls come from many goroutines at
// once; implementations must be safe for that and quick.
type Hook interface {
	// RunStarted: the run and its batches (batch 1 is the canary when the
	// run has one), with each machine's action.
	RunStarted(run inventory.ApplyRun, batches [][]string, actions map[string]plan.Action)
	// BatchStarted: batch i (1-based) starts.
	BatchStarted(i int, machines []string)
	// MachineStep: machine begins step; note says more (may be empty).
	MachineStep(machine string, step Step, note string)
	// AgentReport: the install agent reported progress.
	AgentReport(machine string, st inventory.AgentStatus)
	// MachineDone: the machine finished, err nil on success.
	MachineDone(machine string, err error)
	// Halted: the run starts no more machines, and why.
	Halted(reason string)
	// RunFinished: the run ended.
	RunFinished(res Result)
}

// NopHook ignores everything; embed it to implement part of Hook.
type NopHook struct{}

func (NopHook) RunStarted(inventory.ApplyRun, [][]string, map[string]plan.Action) {}
func (NopHook) BatchStarted(int, []string)                                        {}
func (NopHook) MachineStep(string, Step, string)                                  {}
func (NopHook) AgentReport(string, inventory.AgentStatus)                         {}
func (NopHook) MachineDone(string, error)                                         {}
func (NopHook) Halted(string)                                                     {}
func (NopHook) RunFinished(Result)                                                {}

// Result is how a run ended.
type Result struct {
	RunID string
	State inventory.RunState
	// Done, Failed and NotStarted list machines by name, sorted.
	Done, Failed, NotStarted []string
	// Errors holds each failed machine's cause.
	Errors     map[string]string
	HaltReason string
}

// Err summarises a result as an error: nil when every machine was done.
func (r Result) Err() error {
	switch {
	case r.State == inventory.RunDone:
		return nil
	case r.HaltReason != "":
		return fmt.Errorf("apply run %s halted: %s (%d done, %d failed, %d not started)", r.RunID, r.HaltReason, len(r.Done), len(r.Failed), len(r.NotStarted))
	case r.State == inventory.RunInterrupted:
		return fmt.Errorf("apply run %s interrupted (%d done, %d failed, %d not started); continue it with `metal apply --resume`", r.RunID, len(r.Done), len(r.Failed), len(r.NotStarted))
	}
	return fmt.Errorf("apply run %s: %d of %d machines failed", r.RunID, len(r.Failed), len(r.Done)+len(r.Failed)+len(r.NotStarted))
}

// Errors callers can test for.
var (
	ErrDestroyNotAllowed = errors.New("the plan reprovisions or deprovisions machines")
	ErrNothingToResume   = errors.New("no interrupted apply run to resume")
	ErrStalePlan         = errors.New("the inventory changed since the plan was made")
	ErrInFlight          = errors.New("machines are mid-install in an unfinished apply run")
	ErrNotOrphaned       = errors.New("the apply run is no longer orphaned")
)

// inFlightSteps are the recorded steps at which a machine of a run that
// stopped may be running its install agent or have its image written, so
// that starting it over would install it a second time.
var inFlightSteps = map[string]bool{
	string(StepPowerOn): true, string(StepInstall): true, string(StepLocal): true, string(StepReady): true,
	string(StepPower): true, string(StepWipe): true,
}

// current checks that p can be applied to the store as it is now.
func (e *Engine) current(ctx context.Context, p *plan.Plan) error {
	runs, err := e.store.ApplyRuns(ctx)
	if err != nil {
		return fmt.Errorf("read apply runs: %w", err)
	}
	var inFlight []string
	for _, c := range p.Changes {
		if c.Action == plan.NoOp {
			continue
		}
		for _, run := range runs {
			st, ok := run.Steps[c.Machine]
			if (run.State == inventory.RunRunning || run.State == inventory.RunInterrupted) &&
				ok && st.State == inventory.RunRunning && inFlightSteps[st.Step] {
				inFlight = append(inFlight, c.Machine+" (run "+run.ID+")")
				break
			}
		}
	}
	if len(inFlight) > 0 {
		return fmt.Errorf("%w: %s; `metal apply --resume` continues that run and waits for them (a new apply would install them again)", ErrInFlight, strings.Join(inFlight, ", "))
	}
	var now *plan.Plan
	if p.HardwareRefreshed {
		now, err = PlanHardware(ctx, e.store, e.site, e.opts.BMC)
	} else {
		now, err = Plan(ctx, e.store, e.site)
	}
	if err == nil {
		now, err = now.Only(p.Targets)
	}
	if err != nil {
		return err
	}
	if now.Digest != p.Digest {
		return fmt.Errorf("%w (another apply ran meanwhile, or a BMC reports other hardware settings now?): plan again against what is there now", ErrStalePlan)
	}
	return nil
}

// Engine applies plans of one site to one inventory store.
type Engine struct {
	site  *site.Site
	store inventory.Store
	opts  Options
	decl  map[string]*site.Machine
}

// New returns an engine for site s over store.
func New(s *site.Site, store inventory.Store, opts Options) *Engine {
	e := &Engine{site: s, store: store, opts: opts.withDefaults(), decl: make(map[string]*site.Machine, len(s.Machines))}
	for _, m := range s.Machines {
		e.decl[m.Name] = m
	}
	return e
}

// Apply carries out p, which must have been computed against the same site
// and store (see Plan). It records the site's machines in the store first
// (Sync). The returned error is about the run as a whole (the store
// failing, a refused plan); machine failures are in the Result.
//
// Apply refuses a plan the store has moved on from (ErrStalePlan: another
// apply ran while this one waited for the apply leadership), and one that
// would start over machines an unfinished run left mid-install
// (ErrInFlight: its metal died or lost the leadership; Resume waits for
// them instead of installing them twice).
func (e *Engine) Apply(ctx context.Context, p *plan.Plan) (Result, error) {
	if d := p.Destructive(); len(d) > 0 && !e.opts.AllowDestroy {
		names := make([]string, len(d))
		for i, c := range d {
			names[i] = c.Machine
		}
		return Result{}, fmt.Errorf("%w (%s): allow it explicitly", ErrDestroyNotAllowed, strings.Join(names, ", "))
	}
	if err := e.current(ctx, p); err != nil {
		return Result{}, err
	}
	if err := Sync(ctx, e.store, e.site); err != nil {
		return Result{}, err
	}
	var changes []plan.Change
	for _, c := range p.Changes {
		if c.Action != plan.NoOp {
			changes = append(changes, c)
		}
	}
	names := make([]string, len(changes))
	for i, c := range changes {
		names[i] = c.Machine
	}
	batches, size := Batches(e.site.Rollout, names, e.labelOf)
	now := e.opts.Clock.Now().UTC()
	// The run is recorded pending until every machine's step is: a run
	// cut short (kill -9) while being recorded lists only some of its
	// machines, and resuming it would skip the others (see Resume).
	run := inventory.ApplyRun{
		ID: newRunID(now), PlanDigest: p.Digest, State: inventory.RunPending, StartedAt: now,
		BatchSize: size, MaxFailures: e.site.Rollout.MaxFailures,
		Owner: e.opts.Owner, Options: e.runOptions(),
	}
	if e.site.Rollout.Canary > 0 && len(batches) > 0 {
		run.Canary = len(batches[0])
	}
	run, err := e.store.PutApplyRun(ctx, run)
	if err != nil {
		return Result{}, fmt.Errorf("record apply run: %w", err)
	}
	r := e.newRunner(run, run.Canary > 0)
	for bi, b := range batches {
		for _, name := range b {
			st, err := e.store.PutApplyStep(ctx, run.ID, inventory.ApplyStep{
				Machine: name, Step: string(StepPending), Batch: bi + 1, State: inventory.RunPending, UpdatedAt: now,
			})
			if err != nil {
				return Result{}, fmt.Errorf("record apply run: %w", err)
			}
			r.steps[name] = &st
		}
	}
	for _, c := range changes {
		r.actions[c.Machine] = c
	}
	run.State = inventory.RunRunning
	if r.run, err = e.store.PutApplyRun(ctx, run); err != nil {
		return Result{}, fmt.Errorf("record apply run: %w", err)
	}
	return r.execute(ctx, batches), nil
}

// Resume continues the newest run that did not finish (interrupted, or
// still marked running because its metal was killed): machines whose step
// is done are left alone; the others are planned again and carried on,
// from where they were when that is safe (a machine whose install agent was
// already running is waited for, not reinstalled).
func (e *Engine) Resume(ctx context.Context) (Result, error) {
	runs, err := e.store.ApplyRuns(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("read apply runs: %w", err)
	}
	if to := e.opts.TakeOver; to != nil {
		if len(runs) == 0 || !orphaned(runs[len(runs)-1], to.Owner) || runs[len(runs)-1].ID != to.ID {
			return Result{}, ErrNotOrphaned
		}
	}
	var run *inventory.ApplyRun
	for i := len(runs) - 1; i >= 0 && run == nil; i-- {
		switch runs[i].State {
		case inventory.RunRunning, inventory.RunInterrupted:
			run = &runs[i]
		case inventory.RunPending:
			// The newest apply stopped while it was being recorded,
			// before any machine started: there is nothing to continue
			// (its steps may name only some machines), and an older run
			// is superseded by it. A new apply plans everything again.
			if err := e.abandon(ctx, runs[i]); err != nil {
				return Result{}, err
			}
			return Result{}, ErrNothingToResume
		}
	}
	if run == nil {
		return Result{}, ErrNothingToResume
	}
	if err := Sync(ctx, e.store, e.site); err != nil {
		return Result{}, err
	}
	p, err := Plan(ctx, e.store, e.site)
	if err != nil {
		return Result{}, err
	}
	byName := map[string]plan.Change{}
	for _, c := range p.Changes {
		byName[c.Machine] = c
	}
	unfinished := run.Unfinished()
	var destructive []string
	for _, n := range unfinished {
		if c := byName[n]; (c.Action == plan.Replace || c.Action == plan.Delete) && !e.opts.AllowDestroy {
			// A machine interrupted mid-provision plans as a reprovision
			// when it had an image before; resuming it is what the
			// original run was allowed to do only if it was a create.
			if !e.wasCreate(ctx, *run, n) {
				destructive = append(destructive, n)
			}
		}
	}
	if len(destructive) > 0 {
		return Result{}, fmt.Errorf("%w (%s): allow it explicitly", ErrDestroyNotAllowed, strings.Join(destructive, ", "))
	}

	run.State = inventory.RunRunning
	run.FinishedAt = time.Time{}
	run.HaltReason = ""
	if e.opts.Owner != "" {
		run.Owner = e.opts.Owner
	}
	stepsByName := run.Steps
	// A compare-and-swap on the revision read above: a takeover claims
	// the run only if nobody wrote it since it was found orphaned.
	updated, err := e.store.PutApplyRun(ctx, *run)
	if e.opts.TakeOver != nil && errors.Is(err, inventory.ErrConflict) {
		return Result{}, ErrNotOrphaned
	}
	if err != nil {
		return Result{}, fmt.Errorf("record apply run: %w", err)
	}
	r := e.newRunner(updated, updated.Canary > 0)
	// Keep the run's batches; finished batches drop out.
	byBatch := map[int][]string{}
	for _, n := range unfinished {
		st := stepsByName[n]
		c, ok := byName[n]
		if !ok || c.Action == plan.NoOp {
			// Done meanwhile (its last step was recorded late), or no
			// longer in the site and store: nothing to do.
			st.State, st.Step, st.UpdatedAt = inventory.RunDone, string(StepDone), e.opts.Clock.Now().UTC()
			if _, err := e.store.PutApplyStep(ctx, run.ID, st); err != nil {
				return Result{}, fmt.Errorf("record apply run: %w", err)
			}
			r.done = append(r.done, n)
			continue
		}
		stCopy := st
		r.steps[n] = &stCopy
		r.actions[n] = c
		r.resumeFrom[n] = Step(st.Step)
		byBatch[st.Batch] = append(byBatch[st.Batch], n)
	}
	nums := make([]int, 0, len(byBatch))
	for b := range byBatch {
		nums = append(nums, b)
	}
	sort.Ints(nums)
	batches := make([][]string, 0, len(nums))
	for _, b := range nums {
		batches = append(batches, byBatch[b])
	}
	r.canaryBatch = updated.Canary > 0 && len(nums) > 0 && nums[0] == 1
	for _, s := range stepsByName {
		if s.State == inventory.RunDone {
			r.done = append(r.done, s.Machine)
		}
	}
	return r.execute(ctx, batches), nil
}

// Orphan returns the run a metal named self would take over: the site's
// newest run, still marked running by an owner other than self. Whether
// that owner is dead is for the site's apply leadership to tell: the
// owner holds it for as long as it carries the run out (Options.Owner),
// so whoever is elected next while the run is still running and still
// that owner's (Resume with Options.TakeOver checks both again) found it
// orphaned. A run without an owner was carried out without the
// leadership (a console's reprovision) and is never taken over.
func Orphan(ctx context.Context, store inventory.Store, self string) (inventory.ApplyRun, bool, error) {
	runs, err := store.ApplyRuns(ctx)
	if err != nil {
		return inventory.ApplyRun{}, false, fmt.Errorf("read apply runs: %w", err)
	}
	if len(runs) == 0 {
		return inventory.ApplyRun{}, false, nil
	}
	last := runs[len(runs)-1]
	if last.Owner == "" || last.Owner == self || !orphaned(last, last.Owner) {
		return inventory.ApplyRun{}, false, nil
	}
	return last, true, nil
}

// orphaned: run is still running, and owned by owner.
func orphaned(run inventory.ApplyRun, owner string) bool {
	return run.State == inventory.RunRunning && run.Owner == owner
}

// runOptions are the settings recorded with a run, for whoever takes it
// over.
func (e *Engine) runOptions() inventory.RunOptions {
	return inventory.RunOptions{AllowDestroy: e.opts.AllowDestroy, Wipe: e.opts.Wipe,
		StepTimeout: e.opts.StepTimeout, AgentTimeout: e.opts.AgentTimeout, BootTimeout: e.opts.BootTimeout}
}

// abandon marks a run that never started a machine as failed, so nothing
// shows it as running any more.
func (e *Engine) abandon(ctx context.Context, run inventory.ApplyRun) error {
	run.State = inventory.RunFailed
	run.HaltReason = "stopped while being recorded, before any machine started"
	run.FinishedAt = e.opts.Clock.Now().UTC()
	if _, err := e.store.PutApplyRun(ctx, run); err != nil {
		return fmt.Errorf("record apply run: %w", err)
	}
	return nil
}

// wasCreate reports whether machine n entered run as a new machine (it had
// never been provisioned when the run started), so finishing it rewrites no
// disk that held anything.
func (e *Engine) wasCreate(ctx context.Context, run inventory.ApplyRun, n string) bool {
	m, err := e.store.Machine(ctx, n)
	if err != nil {
		return false
	}
	return m.Applied == nil && run.Steps[n].Step != string(StepWipe)
}

func (e *Engine) labelOf(name string) string {
	if m := e.decl[name]; m != nil {
		return m.Labels[e.site.Rollout.By]
	}
	return ""
}

// newRunID returns a run ID that sorts by start time.
func newRunID(now time.Time) string {
	return now.Format("20060102T150405.000Z") + "-" + randomHex(3)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// runner is one execution of a run.
type runner struct {
	e     *Engine
	opts  Options
	store inventory.Store
	run   inventory.ApplyRun
	// steps and actions are filled before execution and then read only
	// (each machine's goroutine writes its own *ApplyStep).
	steps       map[string]*inventory.ApplyStep
	actions     map[string]plan.Change
	resumeFrom  map[string]Step
	canaryBatch bool

	watch *watcher

	mu       sync.Mutex
	done     []string
	failed   []string
	errs     map[string]string
	halt     string
	haltOnce sync.Once
	halted   chan struct{}
}

func (e *Engine) newRunner(run inventory.ApplyRun, canary bool) *runner {
	return &runner{
		e: e, opts: e.opts, store: e.store, run: run,
		steps: map[string]*inventory.ApplyStep{}, actions: map[string]plan.Change{},
		resumeFrom: map[string]Step{}, canaryBatch: canary,
		errs: map[string]string{}, halted: make(chan struct{}),
	}
}

// execute runs the batches one after the other and records the outcome.
func (r *runner) execute(ctx context.Context, batches [][]string) Result {
	r.watch = newWatcher(r.store, r.opts.Logger)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go r.watch.run(wctx)

	acts := make(map[string]plan.Action, len(r.actions))
	for n, c := range r.actions {
		acts[n] = c.Action
	}
	r.opts.Hook.RunStarted(r.run, batches, acts)
	var notStarted []string
	for bi, batch := range batches {
		if r.stopping(ctx) {
			for _, b := range batches[bi:] {
				notStarted = append(notStarted, b...)
			}
			break
		}
		r.opts.Hook.BatchStarted(r.steps[batch[0]].Batch, batch)
		failedBefore := r.failures()
		var wg sync.WaitGroup
		var skipped sync.Map
		start := r.opts.Clock.Now()
		for i, name := range batch {
			// Starts inside a batch are spaced by the rollout's stagger,
			// in batch order, so power-ons never surge.
			at := start.Add(time.Duration(i) * r.e.site.Rollout.Stagger)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !r.machine(ctx, name, at) {
					skipped.Store(name, true)
				}
			}()
		}
		wg.Wait()
		for _, name := range batch {
			if _, ok := skipped.Load(name); ok {
				notStarted = append(notStarted, name)
			}
		}
		if bi == 0 && r.canaryBatch && r.failures() > failedBefore {
			r.stop(fmt.Sprintf("the canary failed (%s)", strings.Join(r.failedIn(batch), ", ")))
		}
	}
	return r.finish(ctx, notStarted)
}

// failures counts failed machines so far.
func (r *runner) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.failed)
}

func (r *runner) failedIn(batch []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, n := range batch {
		if _, ok := r.errs[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// stop halts the run: no machine starts after this.
func (r *runner) stop(reason string) {
	r.haltOnce.Do(func() {
		r.mu.Lock()
		r.halt = reason
		r.mu.Unlock()
		close(r.halted)
		r.opts.Logger.Warn("apply halted", "run", r.run.ID, "reason", reason)
		r.opts.Hook.Halted(reason)
	})
}

// stopping reports whether no more machines may start.
func (r *runner) stopping(ctx context.Context) bool {
	select {
	case <-r.halted:
		return true
	case <-r.opts.Drain:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// machine applies one machine's change; false when it was not started.
func (r *runner) machine(ctx context.Context, name string, at time.Time) bool {
	if d := at.Sub(r.opts.Clock.Now()); d > 0 {
		select {
		case <-r.opts.Clock.After(d):
		case <-r.halted:
		case <-r.opts.Drain:
		case <-ctx.Done():
		}
	}
	if r.stopping(ctx) {
		return false
	}
	c := r.actions[name]
	log := r.opts.Logger.With("machine", name, "run", r.run.ID)
	m := &machineRun{r: r, name: name, decl: r.e.decl[name], change: c, log: log, from: r.resumeFrom[name]}
	err := m.apply(ctx)
	switch {
	case err == nil:
		m.record(ctx, StepDone, inventory.RunDone, "")
		r.mu.Lock()
		r.done = append(r.done, name)
		r.mu.Unlock()
		log.Info("machine applied", "action", c.Action)
	case ctx.Err() != nil:
		// Aborted: the step stays as it was, running, for --resume.
		log.Warn("machine interrupted", "err", err)
		return true
	default:
		m.fail(ctx, err)
		r.mu.Lock()
		r.failed = append(r.failed, name)
		r.errs[name] = err.Error()
		n := len(r.failed)
		r.mu.Unlock()
		if n > r.e.site.Rollout.MaxFailures {
			r.stop(fmt.Sprintf("%d machines failed, more than max_failures = %d", n, r.e.site.Rollout.MaxFailures))
		}
	}
	r.opts.Hook.MachineDone(name, err)
	return true
}

// finish records the run's outcome.
func (r *runner) finish(ctx context.Context, notStarted []string) Result {
	r.mu.Lock()
	res := Result{
		RunID: r.run.ID, Done: append([]string(nil), r.done...), Failed: append([]string(nil), r.failed...),
		NotStarted: notStarted, Errors: r.errs, HaltReason: r.halt,
	}
	r.mu.Unlock()
	sort.Strings(res.Done)
	sort.Strings(res.Failed)
	sort.Strings(res.NotStarted)
	aborted := ctx.Err() != nil
	inFlight := 0
	for _, st := range r.steps {
		if st.State == inventory.RunRunning {
			inFlight++
		}
	}
	switch {
	case res.HaltReason != "":
		res.State = inventory.RunFailed
	case aborted || inFlight > 0 || len(res.NotStarted) > 0:
		res.State = inventory.RunInterrupted
	case len(res.Failed) > 0:
		res.State = inventory.RunFailed
	default:
		res.State = inventory.RunDone
	}
	// The run's record is written even when ctx was cancelled, so that
	// --resume finds it marked interrupted.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	run, err := r.store.ApplyRun(wctx, r.run.ID)
	if err == nil && run.Owner != r.run.Owner {
		// Another metal took the run over once this one lost the
		// leadership: the run is its to record.
		r.opts.Logger.Warn("apply run taken over by another metal; leaving its record to it", "run", r.run.ID, "owner", run.Owner)
		r.opts.Hook.RunFinished(res)
		return res
	}
	if err == nil {
		run.State = res.State
		run.HaltReason = res.HaltReason
		run.FinishedAt = r.opts.Clock.Now().UTC()
		_, err = r.store.PutApplyRun(wctx, run)
	}
	if err != nil {
		r.opts.Logger.Error("record the end of the apply run", "run", r.run.ID, "err", err)
	}
	r.opts.Hook.RunFinished(res)
	return res
}
