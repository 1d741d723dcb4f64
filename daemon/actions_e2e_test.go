package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/api/apitest"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
)

// fleetLab is a real daemon (daemon.New and Serve, on loopback ports) for a
// site of machines behind simulated Redfish BMCs, whose simulated install
// agents talk to the daemon's own agent protocol. Operators reach it over
// the real API and console with a token kept in the daemon's store.
type fleetLab struct {
	t        *testing.T
	d        *daemon.Daemon
	store    inventory.Store
	fleet    *applytest.Fleet
	base     string // the HTTP listener's URL, "http://127.0.0.1:PORT"
	token    string // the secret of token "ops"
	stateDir string
	logs     *syncbuf.Buffer
}

// labOptions shape a fleetLab.
type labOptions struct {
	agentTime time.Duration
	// edit changes the daemon's options before New (listeners, TLS).
	edit func(*daemon.Options)
}

func newFleetLab(t *testing.T, lo labOptions) *fleetLab {
	t.Helper()
	dir := t.TempDir()
	l := &fleetLab{t: t, stateDir: filepath.Join(dir, "state"), logs: &syncbuf.Buffer{}}
	log := slog.New(slog.NewTextHandler(l.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", l.logs.String())
		}
	})
	listen := freeAddr(t)
	l.base = "http://" + listen

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dbPath := filepath.Join(l.stateDir, "state.db")
	store, err := backend.Open(ctx, "file://"+dbPath, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	l.store = store

	fleet, err := applytest.Start(applytest.Options{Machines: 2, Store: store, AgentTime: lo.agentTime,
		AgentURL: l.base, TokenKey: filepath.Join(l.stateDir, "token.key"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	l.fleet = fleet

	opts := daemon.Options{
		Site: loadSite(t, dir, string(fleet.SiteHCL("file://"+dbPath, ""))), SiteDir: dir, StateDir: l.stateDir, Listen: listen, TFTPAddr: "127.0.0.1:0",
		PowerPoll: -1, Agent: daemon.AgentOptions{Disabled: true}, Store: store, Logger: log,
		// These tests are about the daemon's actions, not its listeners:
		// one address serves everything (TestAPIOffBootListener checks
		// the default).
		API: daemon.APIListen{Shared: true},
	}
	if lo.edit != nil {
		lo.edit(&opts)
	}
	d, err := daemon.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	// The simulated agent needs no kernel: the machine "boots" it when
	// its BMC starts it from the network. Building the real agent's
	// initramfs is the business of images/initramfs's own tests.
	d.Agent = daemon.AgentBoot{Kernel: "/files/agent/vmlinuz", Initrds: []string{"/files/agent/initrd.img"}, Cmdline: "console=ttyS0"}
	l.d = d

	l.token = apitest.Token(t, d.Store, "ops", api.RoleOperate)

	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		d.Close()
	})
	select {
	case <-d.Synced():
	case err := <-done:
		t.Fatalf("serve ended at once: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon's boot policy never followed the store")
	}
	l.waitHTTP(l.base + "/api/v1/whoami")
	return l
}

// waitHTTP waits until url answers at all (the listener is up).
func (l *fleetLab) waitHTTP(url string) {
	l.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s never answered: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string { return testenv.FreeAddr(t) }

// action posts an action to the API with token (none if empty) and
// returns the status and the decoded body.
func (l *fleetLab) action(token string, req api.ActionRequest) (int, map[string]any) {
	l.t.Helper()
	body, _ := json.Marshal(req)
	return l.call(http.DefaultClient, l.base, http.MethodPost, "/api/v1/actions", token, body)
}

func (l *fleetLab) call(c *http.Client, base, method, path, token string, body []byte) (int, map[string]any) {
	l.t.Helper()
	r, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		l.t.Fatal(err)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(r)
	if err != nil {
		l.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

// machine reads a machine from the store.
func (l *fleetLab) machine(name string) inventory.Machine {
	l.t.Helper()
	m, err := l.store.Machine(context.Background(), name)
	if err != nil {
		l.t.Fatal(err)
	}
	return m
}

// waitMachine polls the store until ok holds for the machine.
func (l *fleetLab) waitMachine(name, what string, ok func(inventory.Machine) bool) inventory.Machine {
	l.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		m := l.machine(name)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("machine %s never %s; it is %s (intent %+v, agent %+v)", name, what, m.State, m.Intent, m.Agent)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// events returns the machine's events.
func (l *fleetLab) events(name string) []inventory.Event {
	l.t.Helper()
	evs, err := l.store.Events(context.Background(), inventory.EventQuery{Machine: name})
	if err != nil {
		l.t.Fatal(err)
	}
	return evs
}

// runOf returns the newest apply run that has a step for machine.
func (l *fleetLab) runOf(machine string) (inventory.ApplyRun, bool) {
	l.t.Helper()
	runs, err := l.store.ApplyRuns(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	for i := len(runs) - 1; i >= 0; i-- {
		if _, ok := runs[i].Steps[machine]; ok {
			return runs[i], true
		}
	}
	return inventory.ApplyRun{}, false
}

// waitRunEnd waits for the newest run of machine to end: the engine
// records it a moment after the machine's last step.
func (l *fleetLab) waitRunEnd(machine string) inventory.ApplyRun {
	l.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		run, ok := l.runOf(machine)
		if !ok {
			l.t.Fatalf("machine %s is in no apply run", machine)
		}
		if run.State != inventory.RunRunning && run.State != inventory.RunPending {
			return run
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("run %s of %s never ended", run.ID, machine)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storeDigest is everything an action could have changed: machines,
// events and runs, for "nothing happened" checks.
func (l *fleetLab) storeDigest() string {
	l.t.Helper()
	ctx := context.Background()
	ms, _, err := l.store.Machines(ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	evs, err := l.store.Events(ctx, inventory.EventQuery{})
	if err != nil {
		l.t.Fatal(err)
	}
	runs, err := l.store.ApplyRuns(ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	b, _ := json.Marshal([]any{ms, evs, runs})
	return string(b)
}

func hasEvent(evs []inventory.Event, kind inventory.EventKind, substr string) bool {
	for _, e := range evs {
		if e.Kind == kind && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

// TestActionsEndToEnd drives the daemon's real actions over its HTTP API
// with a token: a power cycle reaches the machine's Redfish BMC, a
// reprovision goes through the converge engine and the simulated agent,
// and a halt stops a reprovision in flight. Each is an event naming the
// token.
func TestActionsEndToEnd(t *testing.T) {
	l := newFleetLab(t, labOptions{agentTime: 3 * time.Second})
	ctx := context.Background()
	m0, m1 := applytest.Name(0), applytest.Name(1)

	t.Run("power cycle", func(t *testing.T) {
		sim := l.fleet.Sim(m0)
		if err := sim.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		before := len(sim.Boots())
		code, body := l.action(l.token, api.ActionRequest{Action: api.ActionPowerCycle, Machine: m0, Reason: "hung kernel"})
		if code != http.StatusOK {
			t.Fatalf("power cycle: HTTP %d %v", code, body)
		}
		// A machine that was on starts again only if it went off first:
		// the sim starts a machine only from off.
		if got := len(sim.Boots()); got != before+1 {
			t.Errorf("BMC saw %d starts after the power cycle, want %d (off, then on)", got, before+1)
		}
		if sim.Power() != "On" {
			t.Errorf("power after the cycle: %s, want On", sim.Power())
		}
		if m := l.machine(m0); m.Power != inventory.PowerOn {
			t.Errorf("store: power after the cycle %q, want on", m.Power)
		}
		if !hasEvent(l.events(m0), api.EventAction, `power-cycle of machine `+m0+` by "ops" (reason: hung kernel): done`) {
			t.Errorf("no action event naming the token: %+v", l.events(m0))
		}
	})

	t.Run("reprovision", func(t *testing.T) {
		code, body := l.action(l.token, api.ActionRequest{Action: api.ActionReprovision, Machine: m0})
		if code != http.StatusOK {
			t.Fatalf("reprovision: HTTP %d %v", code, body)
		}
		// The agent takes seconds: a second reprovision meanwhile is
		// refused, and says why.
		code, body = l.action(l.token, api.ActionRequest{Action: api.ActionReprovision, Machine: m0})
		if code != http.StatusConflict || !strings.Contains(body["error"].(string), "already being reprovisioned") {
			t.Errorf("second reprovision while one runs: HTTP %d %v, want 409 naming the running one", code, body)
		}
		m := l.waitMachine(m0, "provisioned", func(m inventory.Machine) bool { return m.State == inventory.StateProvisioned })
		if m.Intent.Action != inventory.BootLocal {
			t.Errorf("intent after the reprovision: %+v, want local boot", m.Intent)
		}
		if m.Agent == nil || m.Agent.Phase != inventory.AgentDone {
			t.Errorf("agent status: %+v, want done", m.Agent)
		}
		if n := l.fleet.Installs()[m0]; n != 1 {
			t.Errorf("the agent installed %d times, want once", n)
		}
		boots := l.fleet.Sim(m0).Boots()
		if last := boots[len(boots)-1]; last.Target != "Pxe" {
			t.Errorf("the reprovision's start booted %+v, want the network", last)
		}
		evs := l.events(m0)
		for _, want := range []struct {
			kind inventory.EventKind
			text string
		}{
			{api.EventAction, `reprovision of machine ` + m0 + ` by "ops": done`},
			{api.EventAction, `failed: machine ` + m0 + ` is already being reprovisioned`},
			{inventory.EventAgent, "done"},
			{inventory.EventApply, "run "},
		} {
			if !hasEvent(evs, want.kind, want.text) {
				t.Errorf("no %s event with %q in %+v", want.kind, want.text, evs)
			}
		}
		if run := l.waitRunEnd(m0); run.State != inventory.RunDone {
			t.Errorf("run %s is %s, want done", run.ID, run.State)
		}
	})

	t.Run("halt", func(t *testing.T) {
		code, body := l.action(l.token, api.ActionRequest{Action: api.ActionReprovision, Machine: m1})
		if code != http.StatusOK {
			t.Fatalf("reprovision: HTTP %d %v", code, body)
		}
		l.waitMachine(m1, "installing", func(m inventory.Machine) bool {
			return m.Agent != nil && m.Agent.Phase == inventory.AgentRunning
		})
		run, ok := l.runOf(m1)
		if !ok || run.State != inventory.RunRunning {
			t.Fatalf("no running apply run for %s: %+v", m1, run)
		}
		code, body = l.action(l.token, api.ActionRequest{Action: api.ActionHalt, Run: run.ID, Reason: "wrong image"})
		if code != http.StatusOK {
			t.Fatalf("halt: HTTP %d %v", code, body)
		}
		// The answer comes once the run has ended: it is recorded halted,
		// and the machine is not left provisioning.
		run, _ = l.runOf(m1)
		if run.State != inventory.RunFailed || !strings.Contains(run.HaltReason, `halted by "ops"`) {
			t.Errorf("run after the halt: state %s, halt reason %q; want failed, halted by ops", run.State, run.HaltReason)
		}
		if st := run.Steps[m1]; st.State == inventory.RunRunning {
			t.Errorf("the machine's step is still running: %+v", st)
		}
		m := l.machine(m1)
		if m.State != inventory.StateFailed || !strings.Contains(m.History[len(m.History)-1].Cause, "halted") {
			t.Errorf("machine after the halt: %s (%+v), want failed because halted", m.State, m.History)
		}
		if m.Intent.Task != nil {
			t.Errorf("the halted install's task is still offered to the agent: %+v", m.Intent.Task)
		}
		if !hasEvent(l.events(m1), api.EventAction, "") {
			t.Errorf("no action event for the reprovision")
		}
		evs, err := l.store.Events(ctx, inventory.EventQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if !hasEvent(evs, api.EventAction, `halt of apply run `+run.ID+` by "ops" (reason: wrong image): done`) {
			t.Errorf("no halt event: %+v", evs)
		}
		// Halting it again is refused: it no longer runs.
		code, body = l.action(l.token, api.ActionRequest{Action: api.ActionHalt, Run: run.ID})
		if code != http.StatusConflict {
			t.Errorf("halting an ended run: HTTP %d %v, want 409", code, body)
		}
		// The agent's late report of the halted task is refused, and
		// the machine can be reprovisioned again.
		time.Sleep(3500 * time.Millisecond)
		if n := l.fleet.Installs()[m1]; n != 0 {
			t.Errorf("the halted install was counted done %d times", n)
		}
		if m := l.machine(m1); m.State != inventory.StateFailed {
			t.Errorf("after the agent's late report the machine is %s, want still failed", m.State)
		}
		code, body = l.action(l.token, api.ActionRequest{Action: api.ActionReprovision, Machine: m1})
		if code != http.StatusOK {
			t.Fatalf("reprovision after the halt: HTTP %d %v", code, body)
		}
		l.waitMachine(m1, "provisioned", func(m inventory.Machine) bool { return m.State == inventory.StateProvisioned })
		if run := l.waitRunEnd(m1); run.State != inventory.RunDone {
			t.Errorf("run %s is %s, want done", run.ID, run.State)
		}
	})
}

// TestActionsRefusedWithoutToken: without a token, with a wrong one, and
// with a revoked one, every action is refused, and nothing happens: the
// BMC sees no call that changes anything and the store is unchanged.
func TestActionsRefusedWithoutToken(t *testing.T) {
	l := newFleetLab(t, labOptions{})
	m0 := applytest.Name(0)
	revoked := apitest.Token(t, l.d.Store, "leaver", api.RoleOperate)
	reader := apitest.Token(t, l.d.Store, "viewer", api.RoleRead)
	// Used once while valid, so the refusal below is the revocation's.
	if code, body := l.call(http.DefaultClient, l.base, http.MethodGet, "/api/v1/whoami", revoked, nil); code != http.StatusOK {
		t.Fatalf("whoami with the token before revoking it: HTTP %d %v", code, body)
	}
	if err := l.d.Store.DeleteAPIToken(context.Background(), "leaver"); err != nil {
		t.Fatal(err)
	}

	sim := l.fleet.Sim(m0)
	boots, power := len(sim.Boots()), sim.Power()
	before := l.storeDigest()
	for name, token := range map[string]string{
		"no token":      "",
		"garbage":       "metal_garbage",
		"not metal's":   "hunter2",
		"revoked":       revoked,
		"token's name":  "ops",
		"with a suffix": l.token + "x",
		"role read":     reader,
	} {
		for _, req := range []api.ActionRequest{
			{Action: api.ActionPowerCycle, Machine: m0},
			{Action: api.ActionReprovision, Machine: m0},
			{Action: api.ActionHalt, Run: "20250101T000000.000Z-abcdef"},
		} {
			code, body := l.action(token, req)
			if code != http.StatusUnauthorized && code != http.StatusForbidden {
				t.Errorf("%s: %s answered HTTP %d %v, want 401 or 403", name, req.Action, code, body)
			}
		}
	}
	if got := len(sim.Boots()); got != boots || sim.Power() != power {
		t.Errorf("the BMC acted: %d starts (had %d), power %s (was %s)", got, boots, sim.Power(), power)
	}
	if after := l.storeDigest(); after != before {
		t.Errorf("refused actions changed the store:\nbefore %s\nafter  %s", before, after)
	}

	// The token secrets are nowhere in the state directory (the token
	// file holds hashes; the store, keys and staged files no secret) nor
	// in the daemon's log, though both were used.
	for _, secret := range []string{l.token, revoked, reader} {
		random := strings.TrimPrefix(secret, "metal_")
		err := filepath.WalkDir(l.stateDir, func(path string, de os.DirEntry, err error) error {
			if err != nil || !de.Type().IsRegular() {
				return err // directories, and the local API's socket
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Contains(data, []byte(random)) {
				t.Errorf("%s holds a token secret", path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(l.logs.String(), random) {
			t.Errorf("the daemon's log holds a token secret")
		}
	}
}
