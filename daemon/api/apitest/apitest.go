// Package apitest builds what the API and console tests serve: a bbolt
// inventory store holding a site's machines (recorded by the same
// converge/apply.Sync the daemon uses), an apply run in progress, the site's
// planner, and Actions that carry operator actions out on the store the
// way the converge engine does.
package apitest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/site"
)

// Lab is a loaded site and the store that holds it.
type Lab struct {
	Site  *site.Site
	Store inventory.Store
	// RunID is the apply run Seed started.
	RunID string
}

// New loads the site file at path and records its machines in a fresh
// bbolt store in a temporary directory, closed when the test ends.
func New(t testing.TB, path string) *Lab {
	t.Helper()
	res, diags := site.LoadFile(path, site.Options{})
	if diags.HasErrors() {
		t.Fatalf("load %s: %v", path, diags)
	}
	ctx := context.Background()
	store, err := backend.Open(ctx, "file://"+filepath.Join(t.TempDir(), "state.db"), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if err := apply.Sync(ctx, store, res.Site); err != nil {
		t.Fatal(err)
	}
	return &Lab{Site: res.Site, Store: store}
}

// Seed gives the lab some history: power states, a provisioned machine
// with hardware facts and an agent report, boot timeline events, and an
// apply run with a canary and a failed step.
func (l *Lab) Seed(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	ms, _, err := l.Store.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		m.Power, m.PowerAt = inventory.PowerOn, now
		if i == 0 {
			m.Power = inventory.PowerOff
		}
		if err := m.SetState(inventory.StateProvisioning, "apply: install", now); err != nil {
			t.Fatal(err)
		}
		m.Intent = inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/files/agent/vmlinuz", Token: "secret-boot-token",
			Task: &inventory.AgentTask{ID: fmt.Sprintf("t-%d", i), Kind: inventory.TaskInstall, Image: "debian-12", UserData: "#cloud-config\npassword: hunter2"}}
		m.Agent = &inventory.AgentStatus{TaskID: m.Intent.Task.ID, Phase: inventory.AgentRunning, Step: "writing", Done: 1 << 30, Total: 4 << 30, UpdatedAt: now}
		m.Hardware = &inventory.Hardware{CPU: inventory.CPU{Model: "QEMU Virtual CPU", Cores: 4}, MemoryBytes: 8 << 30,
			Disks: []inventory.Disk{{Name: "vda", SizeBytes: 20 << 30}}, DMI: inventory.DMI{Vendor: "QEMU", Product: "Standard PC"}}
		if _, err := l.Store.PutMachine(ctx, m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []inventory.EventKind{inventory.EventDHCPAck, inventory.EventTFTP, inventory.EventKernel} {
			if _, err := l.Store.AppendEvent(ctx, inventory.Event{Time: now, Machine: m.Name, MAC: m.MAC, Kind: k, Message: string(k) + " of " + m.Name}); err != nil {
				t.Fatal(err)
			}
		}
	}
	run, err := l.Store.PutApplyRun(ctx, inventory.ApplyRun{ID: "run-1", PlanDigest: "sha256:abc", State: inventory.RunRunning, StartedAt: now, Canary: 1, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	l.RunID = run.ID
	for i, m := range ms {
		st := inventory.ApplyStep{Machine: m.Name, Step: "install", State: inventory.RunRunning, Batch: 1 + (i+1)/2, UpdatedAt: now}
		if i == 0 {
			st.State, st.Step = inventory.RunDone, "done"
		}
		if i == 2 {
			st.State, st.Error = inventory.RunFailed, "checksum mismatch"
		}
		if _, err := l.Store.PutApplyStep(ctx, run.ID, st); err != nil {
			t.Fatal(err)
		}
	}
}

// Planner plans the lab's site against nothing applied yet, as `metal
// plan` does today.
type Planner struct{ Site *site.Site }

func (p Planner) Plan(context.Context) (*plan.Plan, error) { return plan.Compute(p.Site, nil), nil }

// Actions carries actions out on the store as the engine would, and
// counts them. FailPowerCycle makes power cycles fail like an
// unreachable BMC.
type Actions struct {
	Store          inventory.Store
	FailPowerCycle bool

	mu    sync.Mutex
	calls []string
}

// Calls lists the actions carried out, "power-cycle web-01" etc.
func (a *Actions) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

func (a *Actions) record(s string) {
	a.mu.Lock()
	a.calls = append(a.calls, s)
	a.mu.Unlock()
}

func (a *Actions) PowerCycle(ctx context.Context, name string) error {
	a.record("power-cycle " + name)
	if a.FailPowerCycle {
		return errors.New("bmc unreachable at http://127.0.0.1:1")
	}
	return a.update(ctx, name, func(m *inventory.Machine) error {
		m.Power, m.PowerAt = inventory.PowerOn, time.Now().UTC()
		return nil
	})
}

func (a *Actions) Reprovision(ctx context.Context, name string) error {
	a.record("reprovision " + name)
	return a.update(ctx, name, func(m *inventory.Machine) error {
		if m.State == inventory.StateProvisioning {
			return nil
		}
		return m.SetState(inventory.StateProvisioning, "reprovision requested", time.Now())
	})
}

func (a *Actions) HaltRollout(ctx context.Context, id string) error {
	a.record("halt " + id)
	r, err := a.Store.ApplyRun(ctx, id)
	if err != nil {
		return err
	}
	r.State, r.HaltReason, r.FinishedAt = inventory.RunInterrupted, "halted by an operator", time.Now().UTC()
	_, err = a.Store.PutApplyRun(ctx, r)
	return err
}

func (a *Actions) update(ctx context.Context, name string, fn func(*inventory.Machine) error) error {
	m, err := a.Store.Machine(ctx, name)
	if err != nil {
		return err
	}
	if err := fn(&m); err != nil {
		return err
	}
	_, err = a.Store.PutMachine(ctx, m)
	return err
}

// Token creates an API token called name with role in store and returns
// its secret.
func Token(t testing.TB, store inventory.Store, name string, role api.Role) string {
	t.Helper()
	c, err := api.NewTokens(store, nil, nil).Create(context.Background(), api.NewToken{Name: name, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	return c.Secret
}
