package bmc_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
)

// fakeMachine is an in-memory virtual.Machine. With lie set it accepts
// power on and never turns on: a BMC that reports success it didn't reach.
type fakeMachine struct {
	mu   sync.Mutex
	on   bool
	lie  bool
	boot virtual.Boot
}

func newFakeMachine() *fakeMachine { return &fakeMachine{} }

func (m *fakeMachine) PowerState(context.Context) (virtual.Power, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.on {
		return virtual.PowerOn, nil
	}
	return virtual.PowerOff, nil
}

func (m *fakeMachine) PowerOn(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.on = !m.lie
	return nil
}

func (m *fakeMachine) PowerOff(context.Context, bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.on = false
	return nil
}

func (m *fakeMachine) Reset(ctx context.Context) error { return m.PowerOn(ctx) }

func (m *fakeMachine) SetBootDevice(_ context.Context, b virtual.Boot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.boot = b
	return nil
}

func (m *fakeMachine) InsertMedia(context.Context, string) error { return nil }
func (m *fakeMachine) EjectMedia(context.Context) error          { return nil }

// hangingBMC accepts connections and never answers.
func hangingBMC(t *testing.T) string {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv.URL
}

// failingBMC answers every request with 500.
func failingBMC(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":{"code":"Base.1.8.InternalError","message":"the BMC is on fire"}}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestFleetFaultsStayWithTheirMachine runs one power-on over a fleet where
// some BMCs hang, answer 500, refuse the password or lie about power: only
// those machines fail, each with its cause, and the rest are powered on.
func TestFleetFaultsStayWithTheirMachine(t *testing.T) {
	t.Parallel()
	log := testpeer.NewLog(t)
	good := []string{"web-01", "web-02", "web-03"}
	var specs []virtual.MachineSpec
	for _, n := range good {
		specs = append(specs, virtual.MachineSpec{Name: n, Machine: newFakeMachine()})
	}
	specs = append(specs, virtual.MachineSpec{Name: "liar", Machine: &fakeMachine{lie: true}})
	shared, _ := testpeer.VBMC(t, false, "admin", testPassword, log.Logger, specs...)
	otherPassword, _ := testpeer.VBMC(t, false, "admin", "someone-else's", log.Logger, virtual.MachineSpec{Name: "locked", Machine: newFakeMachine()})

	addrs := map[string]string{
		"web-01": shared, "web-02": shared, "web-03": shared, "liar": shared,
		"hang": hangingBMC(t), "http500": failingBMC(t), "locked": otherPassword,
	}
	order := []string{"web-01", "hang", "web-02", "http500", "locked", "web-03", "liar"}
	var targets []bmc.Target
	for _, name := range order {
		c, err := bmc.New(bmc.Config{
			Machine: name, Protocol: "redfish", Address: addrs[name], System: name,
			Username: "admin", Password: testPassword,
			Timeout: time.Second, Retries: 2, PowerWait: 2 * time.Second,
		}, log.Logger)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, bmc.Target{Name: name, Driver: c})
	}

	start := time.Now()
	results := bmc.RunFleet(context.Background(), targets, bmc.FleetOptions{Concurrency: 3}, bmc.OpPower(bmc.ActionOn))
	took := time.Since(start)

	type outcome struct {
		Power    bmc.Power
		Provider string
		Kind     string
	}
	kinds := map[string]error{
		"timeout": bmc.ErrTimeout, "bmc-failure": bmc.ErrBMCFailure,
		"credentials": bmc.ErrCredentials, "power-not-reached": bmc.ErrPowerNotReached,
	}
	got := map[string]outcome{}
	for _, r := range results {
		o := outcome{Power: r.Power, Provider: r.Provider}
		for k, e := range kinds {
			if errors.Is(r.Err, e) {
				o.Kind = k
			}
		}
		if r.Err != nil && o.Kind == "" {
			o.Kind = "other: " + r.Err.Error()
		}
		if r.Err != nil && !strings.Contains(r.Error, "machine "+r.Machine) {
			t.Errorf("%s: error does not name the machine: %s", r.Machine, r.Error)
		}
		got[r.Machine] = o
	}
	want := map[string]outcome{
		"web-01":  {Power: bmc.PowerOn, Provider: "gofish"},
		"web-02":  {Power: bmc.PowerOn, Provider: "gofish"},
		"web-03":  {Power: bmc.PowerOn, Provider: "gofish"},
		"hang":    {Kind: "timeout"},
		"http500": {Kind: "bmc-failure"},
		"locked":  {Kind: "credentials"},
		"liar":    {Kind: "power-not-reached", Provider: "gofish"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fleet outcomes (-want +got):\n%s", diff)
	}
	if took > 15*time.Second {
		t.Errorf("fleet took %s: a bad BMC held up the rest", took)
	}
	for i, r := range results {
		if r.Machine != order[i] {
			t.Errorf("result %d is %s, want %s (results keep the targets' order)", i, r.Machine, order[i])
		}
	}
	js, err := json.Marshal(results)
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	for _, r := range results {
		errs = append(errs, r.Error)
	}
	assertNoSecret(t, string(js), strings.Join(errs, "\n"), log.String())
	if t.Failed() {
		t.Logf("results: %s", js)
	}
}

// TestFleetCancellation: cancelling the context ends a fleet call at once,
// even while a BMC hangs with a long per-call timeout.
func TestFleetCancellation(t *testing.T) {
	t.Parallel()
	c, err := bmc.New(bmc.Config{Machine: "stuck", Protocol: "redfish", Address: hangingBMC(t), Username: "u", Password: "p", Timeout: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	results := bmc.RunFleet(ctx, []bmc.Target{{Name: "stuck", Driver: c}}, bmc.FleetOptions{}, bmc.OpStatus)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("cancelled fleet call took %s", took)
	}
	if results[0].Err == nil || !errors.Is(results[0].Err, context.DeadlineExceeded) && !errors.Is(results[0].Err, bmc.ErrTimeout) {
		t.Errorf("err = %v, want a timeout", results[0].Err)
	}
	if err := bmc.FleetError(results); !errors.Is(err, bmc.ErrFleet) {
		t.Errorf("FleetError = %v", err)
	}
}
