package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/converge/runner"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// Paths of the local socket (LocalSocket) by which `metal apply` hands a
// run to the daemon that serves the site, instead of running the netboot
// servers itself (which the daemon already holds: the ports and, with an
// embedded store, the store's file). Who may call them is decided by the
// socket's file mode, as for the rest of the local API.
const (
	// LocalApplyPath takes an ApplyRequest and answers with the run's
	// progress: one apply.Event per line (application/x-ndjson), the last
	// a "finished" or "error" event. A request refused before the run
	// starts gets a 4xx status and {"error": "..."}.
	LocalApplyPath = "/local/v1/apply"
	// LocalDrainPath: start no more machines of the submitted run; those in
	// flight finish (the first Ctrl-C of the submitting `metal apply`).
	LocalDrainPath = "/local/v1/apply/drain"
	// LocalAbandonPath: abandon the machines in flight where they are (the
	// second Ctrl-C); `metal apply --resume` continues.
	LocalAbandonPath = "/local/v1/apply/abandon"
)

// ApplyRequest is what `metal apply` submits.
type ApplyRequest struct {
	// SiteFile is the absolute path of the site file the caller loaded,
	// SiteDigest the digest of its content as the caller read it. The
	// daemon applies the site it serves: if the digest differs it reloads
	// its site file first, and refuses when the two still differ.
	SiteFile   string `json:"site_file"`
	SiteDigest string `json:"site_digest"`
	// PlanDigest is the digest of the plan the caller showed (and the
	// operator confirmed); the daemon refuses when its own plan differs.
	// Empty with Resume.
	PlanDigest   string   `json:"plan_digest,omitempty"`
	Targets      []string `json:"targets,omitempty"`
	Resume       bool     `json:"resume,omitempty"`
	AllowDestroy bool     `json:"allow_destroy,omitempty"`
	// Wipe is how deprovisions erase disks: quick, discard, zero or
	// secure; empty takes each machine's wipe from the site.
	Wipe         inventory.WipeMethod `json:"wipe,omitempty"`
	StepTimeout  time.Duration        `json:"step_timeout,omitempty"`
	AgentTimeout time.Duration        `json:"agent_timeout,omitempty"`
	BootTimeout  time.Duration        `json:"boot_timeout,omitempty"`
	// ConsoleLog is where machines' console logs are, {machine} for the
	// name (apply.ConsoleLogPattern).
	ConsoleLog string `json:"console_log,omitempty"`
}

// submitted tracks the one apply run submitted to this daemon at a time.
type submitted struct {
	mu      sync.Mutex
	current *submittedRun
}

type submittedRun struct {
	id      string // set once the engine starts the run
	drain   func()
	abandon func()
}

// begin registers a run; false when one is already under way.
func (s *submitted) begin(r *submittedRun) (*submittedRun, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil {
		return s.current, false
	}
	s.current = r
	return r, true
}

func (s *submitted) end() {
	s.mu.Lock()
	s.current = nil
	s.mu.Unlock()
}

func (s *submitted) setID(id string) {
	s.mu.Lock()
	if s.current != nil {
		s.current.id = id
	}
	s.mu.Unlock()
}

// get returns the run under way, if any.
func (s *submitted) get() (submittedRun, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return submittedRun{}, false
	}
	return *s.current, true
}

// localApplyHandlers are the local socket's apply endpoints; serveCtx is
// the daemon's: a submitted run outlives the request that started it (a
// `metal apply` whose terminal went away drains the run, it does not kill
// it), and ends only when the daemon stops.
func (d *Daemon) localApplyHandlers(serveCtx context.Context, mux *http.ServeMux) {
	mux.HandleFunc("POST "+LocalApplyPath, func(w http.ResponseWriter, r *http.Request) {
		d.serveApply(serveCtx, w, r)
	})
	// control does what to the run under way.
	control := func(what func(submittedRun)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			run, ok := d.applies.get()
			if !ok {
				localError(w, http.StatusNotFound, errors.New("no apply run is under way in this metal serve"))
				return
			}
			what(run)
			w.WriteHeader(http.StatusNoContent)
		}
	}
	mux.HandleFunc("POST "+LocalDrainPath, control(func(run submittedRun) { run.drain() }))
	mux.HandleFunc("POST "+LocalAbandonPath, control(func(run submittedRun) { run.abandon() }))
}

func localError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// serveApply runs one submitted apply, streaming its events.
func (d *Daemon) serveApply(serveCtx context.Context, w http.ResponseWriter, r *http.Request) {
	var req ApplyRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		localError(w, http.StatusBadRequest, fmt.Errorf("apply request: %w", err))
		return
	}
	runCtx, abandon := context.WithCancel(serveCtx)
	defer abandon()
	drainCh := make(chan struct{})
	var drainOnce sync.Once
	drain := func() { drainOnce.Do(func() { close(drainCh) }) }
	if cur, ok := d.applies.begin(&submittedRun{drain: drain, abandon: abandon}); !ok {
		what := "an apply"
		if cur.id != "" {
			what = "apply run " + cur.id
		}
		localError(w, http.StatusConflict, fmt.Errorf("%s submitted by another metal apply is under way in this metal serve; follow it with `metal events --follow`, or wait for it", what))
		return
	}
	defer d.applies.end()

	s, err := d.siteFor(r.Context(), req.SiteFile, req.SiteDigest)
	if err != nil {
		localError(w, http.StatusConflict, err)
		return
	}
	v := &submittedView{w: w, rc: http.NewResponseController(w), r: r, req: &req,
		setID: d.applies.setID, drain: drain, log: d.log, finished: make(chan struct{})}
	defer close(v.finished)
	_, err = runner.Run(runCtx, runner.Operation{
		Site: s, Store: d.Store, Resume: req.Resume, Targets: req.Targets,
		Hardware: d.operator.planBMCs,
		Engine:   d.EngineFor(req, d.operator.bmcs, drainCh, d.log.With("component", "apply")),
	}, v)
	if err == nil {
		return
	}
	if !v.streaming {
		status := http.StatusInternalServerError
		if errors.Is(err, errPlanChanged) {
			status = http.StatusConflict
		}
		localError(w, status, err)
		return
	}
	v.emit(apply.Event{Type: apply.EventError, Error: err.Error()})
}

// Engine returns o with what reaches this daemon's netboot filled in: the
// install agent it boots, where it serves images and firmware, the
// readiness URL machines call, and the boot CDs of virtual-media machines.
func (d *Daemon) Engine(o apply.Options) apply.Options {
	o.AgentBoot = apply.AgentBoot(d.Agent)
	o.ImageURL, o.ImageStream, o.ImagePath, o.ReadyURL = d.ImageURL, d.ImageStream, d.ImagePath, d.ReadyURL
	o.ReadyAlso = d.readyAlso()
	o.Media = d.BootMedia
	o.FirmwareURL = d.FirmwareURL
	o.SecureBootChain = d.secureBootChain
	return o
}

// EngineFor is the engine's options of the run req asks for, with this
// daemon's netboot filled in (Engine): bmcs reach the machines' BMCs, and
// once drain closes no more machines start. A submitted run and an apply
// that runs its own servers both take it.
func (d *Daemon) EngineFor(req ApplyRequest, bmcs apply.BMCFunc, drain <-chan struct{}, log *slog.Logger) apply.Options {
	return d.Engine(apply.Options{
		BMC:         bmcs,
		StepTimeout: req.StepTimeout, AgentTimeout: req.AgentTimeout,
		BootTimeout: req.BootTimeout, ConsoleLog: apply.ConsoleLogPattern(req.ConsoleLog),
		AllowDestroy: req.AllowDestroy, Wipe: req.Wipe, Drain: drain, Logger: log,
		// Both callers lead the site for the run (runner.Run).
		Owner: d.owner,
	})
}

// ServeWhile serves netboot until the returned stop is called; failed is
// told if the servers fail (runner.Operation.Serve: an apply that runs its
// own servers for its length). It returns once the boot intents written
// from then on are what the next netboot gets.
func (d *Daemon) ServeWhile(ctx context.Context, failed func(error)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Serve(ctx); err != nil {
			failed(err)
		}
	}()
	select {
	case <-d.Synced():
	case <-done:
	case <-ctx.Done():
	}
	return func() {
		cancel()
		<-done
	}
}

var errPlanChanged = errors.New("the machines changed since metal apply computed the plan it showed (a run applied, failed or removed some meanwhile, or a BMC reports other hardware settings now); nothing was changed: run metal apply again and review the new plan")

// submittedView is runner.View for a run submitted over the local socket:
// the caller showed and confirmed the plan, so the daemon's own plan must
// be the same; progress streams back as apply.Events, one per line. If the
// caller goes away, the run drains.
type submittedView struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	r         *http.Request
	req       *ApplyRequest
	setID     func(string)
	drain     func()
	log       *slog.Logger
	mu        sync.Mutex
	streaming bool
	finished  chan struct{}
}

func (v *submittedView) Plan(p *plan.Plan) (bool, error) {
	if p.Digest != v.req.PlanDigest {
		return false, errPlanChanged
	}
	return true, nil
}

// Approve starts the stream (the caller approved before submitting) and
// drains the run if the caller goes away.
func (v *submittedView) Approve() error {
	if err := v.r.Context().Err(); err != nil {
		return err
	}
	v.w.Header().Set("Content-Type", "application/x-ndjson")
	v.w.WriteHeader(http.StatusOK)
	v.streaming = true
	go func() {
		select {
		case <-v.r.Context().Done():
			v.log.Warn("the metal apply that submitted the run went away; the run starts no more machines, those in flight finish (metal apply --resume continues)")
			v.drain()
		case <-v.finished:
		}
	}()
	return nil
}

func (v *submittedView) Waiting() {
	v.emit(apply.Event{Type: apply.EventNotice, Note: "Another metal apply is changing this site's machines; waiting for it to finish (Ctrl-C gives up)."})
}

func (v *submittedView) Start() apply.Hook {
	return runIDHook{EventHook: apply.EventHook{Emit: v.emit}, set: v.setID}
}

func (v *submittedView) emit(e apply.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, _ := json.Marshal(e)
	v.mu.Lock()
	defer v.mu.Unlock()
	// A caller that went away misses the rest; the run goes on.
	if _, err := v.w.Write(append(b, '\n')); err == nil {
		_ = v.rc.Flush()
	}
}

// runIDHook tells the daemon the run's ID as the engine starts it, so the
// console's halt finds it.
type runIDHook struct {
	apply.EventHook
	set func(string)
}

func (h runIDHook) RunStarted(run inventory.ApplyRun, batches [][]string, actions map[string]plan.Action) {
	h.set(run.ID)
	h.EventHook.RunStarted(run, batches, actions)
}

// siteFor returns the site to apply for a caller that loaded file with
// the given digest: the daemon's own site, reloaded from its file first
// when the caller read a different version of it.
func (d *Daemon) siteFor(ctx context.Context, file, digest string) (*site.Site, error) {
	d.siteMu.Lock()
	defer d.siteMu.Unlock()
	if d.siteFile != "" && file != "" && !sameFile(file, d.siteFile) {
		return nil, fmt.Errorf("this metal serve (pid %d) serves %s, not %s: apply that file, or stop metal serve to apply this one", os.Getpid(), d.siteFile, file)
	}
	if digest == d.siteDigest {
		return d.site, nil
	}
	if d.reload == nil {
		return nil, fmt.Errorf("the site file changed since this metal serve (pid %d) started, and it cannot reload it: restart metal serve, then apply", os.Getpid())
	}
	s, got, err := d.reload(ctx)
	if err != nil {
		return nil, fmt.Errorf("metal serve reloading %s: %w", d.siteFile, err)
	}
	if got != digest {
		return nil, fmt.Errorf("metal serve read %s differently from this metal apply: the file changed again meanwhile, or they were given different variables (-var, -var-file, METAL_VAR_*); apply again, or restart metal serve with the same variables", d.siteFile)
	}
	if err := d.adoptLocked(ctx, s, got, "then apply"); err != nil {
		return nil, err
	}
	d.log.Info("site reloaded for an apply", "file", d.siteFile, "machines", len(s.Machines))
	return s, nil
}

// Reload reads the site file again and serves what it says now, as an
// apply of an edited file does first (metal serve on SIGHUP, systemctl
// reload). A change that takes a restart (networks, listen, state) is
// refused, and the site served before is kept.
func (d *Daemon) Reload(ctx context.Context) error {
	d.siteMu.Lock()
	defer d.siteMu.Unlock()
	if d.reload == nil {
		return errors.New("this metal serve was not given a site file it can read again: restart it instead")
	}
	s, got, err := d.reload(ctx)
	if err != nil {
		return fmt.Errorf("reloading %s: %w", d.siteFile, err)
	}
	if got == d.siteDigest {
		d.log.Info("site reload: unchanged", "file", d.siteFile)
		return nil
	}
	if err := d.adoptLocked(ctx, s, got, "to take it"); err != nil {
		return err
	}
	d.log.Info("site reloaded", "file", d.siteFile, "machines", len(s.Machines))
	return nil
}

// adoptLocked makes s, read from the site file with the given digest, the
// site served, unless it changed what the running servers were built
// from; then says what to do, ending with then. d.siteMu is held.
func (d *Daemon) adoptLocked(ctx context.Context, s *site.Site, digest, then string) error {
	if why := restartNeeded(d.site, s); why != "" {
		return fmt.Errorf("%s changed in %s: metal serve takes that only when it starts; restart metal serve (pid %d), %s", why, d.siteFile, os.Getpid(), then)
	}
	if _, required := needsAgent(s); required && d.Agent.Kernel == "" {
		return fmt.Errorf("the site now installs disk images, and this metal serve (pid %d) started without an install agent: restart it, %s", os.Getpid(), then)
	}
	if err := SyncSite(ctx, d.Store, s); err != nil {
		return err
	}
	catalog, err := ensureImages(ctx, d.cache, s)
	if err != nil {
		return err
	}
	d.site, d.catalog, d.siteDigest = s, catalog, digest
	return nil
}

func sameFile(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// restartNeeded names what differs between two versions of a site that
// the running servers were built from (listen addresses, DHCP networks,
// the store), or "" when a reload can take the new one.
func restartNeeded(old, cur *site.Site) string {
	if old.Name != cur.Name {
		return "the site's name"
	}
	o, c := old.Settings, cur.Settings
	switch {
	case o.State != c.State:
		return "the site's state setting"
	case o.Listen != c.Listen:
		return "the site's listen setting"
	case o.IPXEDir != c.IPXEDir:
		return "the site's ipxe_dir setting"
	case o.UnknownMachines != c.UnknownMachines:
		return "the site's unknown_machines setting"
	}
	if networksKey(old) != networksKey(cur) {
		return "a network block"
	}
	return ""
}

func networksKey(s *site.Site) string {
	var k string
	for _, n := range s.Networks {
		k += fmt.Sprintln(n.Name, n.Interface, n.Subnet, n.Gateway, n.DNS, n.Subnet6, n.DNS6, n.Domain,
			n.PoolStart, n.PoolEnd, n.Mode, n.LeaseTime, n.RelayAgents)
	}
	return k
}
