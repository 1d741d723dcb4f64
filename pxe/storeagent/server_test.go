package storeagent_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/agentapi"
	"github.com/metal-dev/metal/pxe/storeagent"
)

var (
	known   = mustMAC("52:54:00:00:00:01")
	unknown = mustMAC("52:54:00:aa:bb:cc")
	other   = mustMAC("52:54:00:00:00:09")
	now     = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	// secret is web-01's task's one-time credential.
	secret = strings.Repeat("5e", 32)
)

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// setup serves the protocol over real HTTP on loopback, over a real store
// holding one machine (web-01, MAC known) with an install task whose
// secret is secret, and a provisioned machine (db-01, MAC other) with none.
func setup(t *testing.T) (inventory.Store, *httptest.Server) {
	t.Helper()
	ctx := context.Background()
	store, err := inventory.Open(ctx, inventory.NewMemoryKV(), inventory.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	m := inventory.Machine{Name: "web-01", MAC: known.String(), State: inventory.StateProvisioning,
		Intent: inventory.BootIntent{Action: inventory.BootInstall, Token: "tok-web-01", Task: &inventory.AgentTask{
			ID: "t1", Kind: inventory.TaskInstall, ImageURL: "http://192.0.2.1/images/x.raw.gz", Format: "gz",
			Checksum: "sha256:00", Hostname: "web-01", UserData: "#cloud-config\npassword: hunter2", Secret: secret,
		}}}
	if _, err := store.PutMachine(ctx, m); err != nil {
		t.Fatal(err)
	}
	db := inventory.Machine{Name: "db-01", MAC: other.String(), State: inventory.StateProvisioned,
		Intent: inventory.BootIntent{Action: inventory.BootLocal}}
	if _, err := store.PutMachine(ctx, db); err != nil {
		t.Fatal(err)
	}
	srv, err := storeagent.New(storeagent.Config{
		Store: store, PollSeconds: 1,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return store, hs
}

func TestUnknownMachineIsDiscovered(t *testing.T) {
	store, hs := setup(t)
	ctx := context.Background()
	c := &agentapi.Client{BaseURL: hs.URL, MAC: unknown}
	resp, err := c.Task(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(agentapi.TaskResponse{PollSeconds: 1}, resp); diff != "" {
		t.Errorf("task before facts (-want +got):\n%s", diff)
	}
	hw := agentapi.Hardware{
		CPU: agentapi.CPU{Model: "QEMU Virtual CPU", Sockets: 1, Cores: 2, Threads: 2}, MemoryBytes: 1 << 30,
		Disks: []agentapi.Disk{{Name: "vda", SizeBytes: 64 << 20, Serial: "disk0"}},
		NICs:  []agentapi.NIC{{Name: "eth0", MAC: unknown.String(), Driver: "virtio_net"}},
		DMI:   agentapi.DMI{Vendor: "QEMU", Product: "Standard PC"},
	}
	if err := c.Facts(ctx, hw); err != nil {
		t.Fatal(err)
	}
	m, err := store.MachineByMAC(ctx, unknown.String())
	if err != nil {
		t.Fatal(err)
	}
	// The store holds what was sent (the message's JSON is the record's),
	// stamped with when.
	var want inventory.Hardware
	b, _ := json.Marshal(hw)
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	want.ReportedAt = now
	if diff := cmp.Diff(&want, m.Hardware); diff != "" {
		t.Errorf("stored hardware (-want +got):\n%s", diff)
	}
	if m.Name != "m-525400aabbcc" || m.State != inventory.StateDiscovered {
		t.Errorf("discovered machine: name %q state %q, want m-525400aabbcc discovered", m.Name, m.State)
	}
	// A second report updates the same machine.
	hw.MemoryBytes = 2 << 30
	if err := c.Facts(ctx, hw); err != nil {
		t.Fatal(err)
	}
	ms, _, _ := store.Machines(ctx)
	if len(ms) != 3 {
		t.Errorf("%d machines after two reports, want 3", len(ms))
	}
	evs, _ := store.Events(ctx, inventory.EventQuery{Machine: "m-525400aabbcc"})
	if len(evs) != 2 || evs[0].Kind != inventory.EventAgent || !strings.HasPrefix(evs[0].Message, "discovered;") {
		t.Errorf("events: %+v, want two agent events, the first saying discovered", evs)
	}
}

func TestInstallReports(t *testing.T) {
	store, hs := setup(t)
	ctx := context.Background()
	c := &agentapi.Client{BaseURL: hs.URL, MAC: known, Token: secret}
	resp, err := c.Task(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The protocol's task has no secret to carry; nor does the answer.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+agentapi.Prefix+"v1/"+known.String()+"/task", nil)
	req.Header.Set(agentapi.TokenHeader, secret)
	raw, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(raw.Body)
	raw.Body.Close()
	if strings.Contains(string(body), secret) {
		t.Errorf("the task answer carries the secret: %s", body)
	}
	if resp.Task == nil || resp.Task.ID != "t1" || resp.Task.Kind != agentapi.TaskInstall || resp.Task.Format != "gz" {
		t.Fatalf("task: %+v, want install t1", resp.Task)
	}
	reports := []agentapi.Status{
		{TaskID: "t1", Phase: agentapi.PhaseRunning, Step: "writing", Total: 100},
		{TaskID: "t1", Phase: agentapi.PhaseRunning, Step: "writing", Done: 50, Total: 100},
		{TaskID: "t1", Phase: agentapi.PhaseRunning, Step: "writing", Done: 100, Total: 100},
		{TaskID: "t1", Phase: agentapi.PhaseFailed, Step: "verifying", Error: "checksum mismatch: want sha256:00, got sha256:11"},
	}
	for _, st := range reports {
		if err := c.Status(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := store.Machine(ctx, "web-01")
	want := &inventory.AgentStatus{TaskID: "t1", Phase: inventory.AgentFailed, Step: "verifying",
		Error: "checksum mismatch: want sha256:00, got sha256:11", UpdatedAt: now}
	if diff := cmp.Diff(want, m.Agent); diff != "" {
		t.Errorf("agent status (-want +got):\n%s", diff)
	}
	evs, _ := store.Events(ctx, inventory.EventQuery{Machine: "web-01"})
	var msgs []string
	for _, e := range evs {
		msgs = append(msgs, e.Message)
	}
	wantMsgs := []string{
		"agent task t1: started; its boot script is not served again",
		"agent task t1: running (writing)",
		"agent task t1: failed (verifying): checksum mismatch: want sha256:00, got sha256:11",
	}
	if diff := cmp.Diff(wantMsgs, msgs); diff != "" {
		t.Errorf("events: progress alone adds none (-want +got):\n%s", diff)
	}

	err = c.Status(ctx, agentapi.Status{TaskID: "t0", Phase: agentapi.PhaseDone})
	if !errors.Is(err, agentapi.ErrStaleTask) {
		t.Errorf("report of an old task: %v, want ErrStaleTask", err)
	}
}

// TestAuthorisation: a machine with a task is spoken for only with its
// task's secret, from any address; without a task, nothing secret is
// handed out and a declared machine's record does not change.
func TestAuthorisation(t *testing.T) {
	store, hs := setup(t)
	ctx := context.Background()
	cases := map[string]struct {
		mac   net.HardwareAddr
		token string
		task  bool // GET task allowed
		facts bool // POST facts allowed
	}{
		"task secret":                  {mac: known, token: secret, task: true, facts: true},
		"no secret":                    {mac: known},
		"wrong secret":                 {mac: known, token: strings.Repeat("00", 32)},
		"secret's prefix":              {mac: known, token: secret[:32]},
		"script token of the machine":  {mac: known, token: pxe.Token([]byte("key"), known)},
		"no task, no secret":           {mac: other, task: true},
		"no task, another's secret":    {mac: other, token: secret, task: true},
		"unknown MAC: discovery":       {mac: unknown, task: true, facts: true},
		"unknown MAC with a bad token": {mac: unknown, token: "nope", task: true, facts: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := &agentapi.Client{BaseURL: hs.URL, MAC: tc.mac, Token: tc.token}
			resp, err := c.Task(ctx)
			if tc.task != (err == nil) {
				t.Errorf("task: %v, want allowed=%v", err, tc.task)
			}
			if err != nil && !strings.Contains(err.Error(), "403") {
				t.Errorf("refusal: %v, want 403", err)
			}
			if tc.mac.String() != known.String() || tc.token != secret {
				if resp.Task != nil {
					t.Errorf("task handed out: %+v", resp.Task)
				}
			}
			err = c.Facts(ctx, agentapi.Hardware{CPU: agentapi.CPU{Model: "rogue " + name}})
			if tc.facts != (err == nil) {
				t.Errorf("facts: %v, want allowed=%v", err, tc.facts)
			}
			err = c.Status(ctx, agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseDone})
			if want := tc.mac.String() == known.String() && tc.token == secret; want != (err == nil) {
				t.Errorf("status: %v, want allowed=%v", err, want)
			}
			if err == nil {
				// Put the task back for the next case.
				inventory.UpdateMachine(ctx, store, "web-01", func(m *inventory.Machine) error { m.Agent = nil; return nil })
			}
		})
	}
	db, _ := store.Machine(ctx, "db-01")
	if db.Hardware != nil || db.Agent != nil {
		t.Errorf("db-01 (no task) was changed: hardware %+v agent %+v", db.Hardware, db.Agent)
	}
	evs, _ := store.Events(ctx, inventory.EventQuery{Machine: "web-01"})
	security := 0
	for _, e := range evs {
		if e.Kind == inventory.EventSecurity {
			security++
		}
	}
	// Refusals about web-01 within 10 s make one event, not one each.
	if security != 1 {
		t.Errorf("%d security events about web-01, want 1 (rate limited): %+v", security, evs)
	}
}

func TestHostileBodies(t *testing.T) {
	_, hs := setup(t)
	base := hs.URL + agentapi.Prefix + "v1/" + known.String()
	cases := map[string]struct {
		path, body string
		status     int
	}{
		"facts not JSON":          {"/facts", "{", 400},
		"facts wrong type":        {"/facts", `{"memory_bytes":"lots"}`, 400},
		"facts two values":        {"/facts", `{} {}`, 400},
		"facts nameless disk":     {"/facts", `{"disks":[{"size_bytes":1}]}`, 400},
		"facts bad NIC MAC":       {"/facts", `{"nics":[{"name":"eth0","mac":"zz"}]}`, 400},
		"facts NUL in text":       {"/facts", `{"cpu":{"model":"a\u0000b"}}`, 400},
		"facts too big":           {"/facts", `{"extra":{"a":"` + strings.Repeat("x", 2<<20) + `"}}`, 413},
		"facts negative cores":    {"/facts", `{"cpu":{"cores":-1}}`, 400},
		"facts ok":                {"/facts", `{"disks":[{"name":"vda"}]}`, 204},
		"status not JSON":         {"/status", "nope", 400},
		"status no task":          {"/status", `{"phase":"done"}`, 400},
		"status bad phase":        {"/status", `{"task_id":"t1","phase":"exploded"}`, 400},
		"status failed no reason": {"/status", `{"task_id":"t1","phase":"failed"}`, 400},
		"status done > total":     {"/status", `{"task_id":"t1","phase":"running","done":5,"total":4}`, 400},
		"status null":             {"/status", `null`, 400},
		"status ok":               {"/status", `{"task_id":"t1","phase":"done"}`, 204},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, base+tc.path, strings.NewReader(tc.body))
			req.Header.Set(agentapi.TokenHeader, secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, msg, tc.status)
			}
		})
	}
	resp, err := http.Get(hs.URL + agentapi.Prefix + "v1/not-a-mac/task")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("bad MAC: %d, want 404", resp.StatusCode)
	}
}

// TestDoneTaskNotOfferedAgain: an agent that netboots again after it
// reported its task done (metal died before it wrote the local-disk
// intent) is not given the same task again: the disk is written once.
func TestDoneTaskNotOfferedAgain(t *testing.T) {
	_, hs := setup(t)
	ctx := context.Background()
	c := &agentapi.Client{BaseURL: hs.URL, MAC: known, Token: secret}
	if resp, err := c.Task(ctx); err != nil || resp.Task == nil {
		t.Fatalf("first ask: %+v %v, want the install task", resp, err)
	}
	for _, st := range []agentapi.Status{
		{TaskID: "t1", Phase: agentapi.PhaseRunning, Step: "writing"},
		{TaskID: "t1", Phase: agentapi.PhaseDone, Step: "verified"},
	} {
		if err := c.Status(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.Task(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Task != nil {
		t.Errorf("after done, the agent was given %+v again, want no task", resp.Task)
	}
}

// TestFinalReportRepeatedAfterMoveOn: an agent whose final report reached
// metal but whose answer was lost (metal killed in between) sends it again
// after metal has moved the machine on (task cleared). The repeat is
// acknowledged, since it counted; anything else about that task is stale,
// and the record does not change.
func TestFinalReportRepeatedAfterMoveOn(t *testing.T) {
	store, hs := setup(t)
	ctx := context.Background()
	c := &agentapi.Client{BaseURL: hs.URL, MAC: known, Token: secret}
	final := agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseDone, Step: "rebooting"}
	if err := c.Status(ctx, final); err != nil {
		t.Fatal(err)
	}
	// The engine moves on: boot from the local disk, no task.
	if _, err := inventory.UpdateMachine(ctx, store, "web-01", func(m *inventory.Machine) error {
		m.Intent = inventory.BootIntent{Action: inventory.BootLocal}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before, _ := store.Machine(ctx, "web-01")

	tests := map[string]struct {
		st        agentapi.Status
		wantStale bool
	}{
		"the same final report":       {st: final},
		"the same, without its step":  {st: agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseDone}},
		"another phase":               {st: agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseFailed, Error: "late"}, wantStale: true},
		"progress after the end":      {st: agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseRunning, Step: "writing"}, wantStale: true},
		"a final report of some task": {st: agentapi.Status{TaskID: "t0", Phase: agentapi.PhaseDone}, wantStale: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := c.Status(ctx, tc.st)
			if tc.wantStale != errors.Is(err, agentapi.ErrStaleTask) || (!tc.wantStale && err != nil) {
				t.Errorf("Status = %v, want stale %v", err, tc.wantStale)
			}
		})
	}
	after, _ := store.Machine(ctx, "web-01")
	if diff := cmp.Diff(before.Agent, after.Agent); diff != "" {
		t.Errorf("the record changed (-before +after):\n%s", diff)
	}
}
