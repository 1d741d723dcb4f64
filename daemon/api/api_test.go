package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/api/apitest"
	"github.com/metal-dev/metal/inventory"
)

type fixture struct {
	lab     *apitest.Lab
	actions *apitest.Actions
	url     string
	token   string
}

// serve starts the API on a loopback port over a seeded bbolt store.
func serve(t *testing.T, openReads bool) *fixture {
	t.Helper()
	lab := apitest.New(t, "testdata/site.hcl")
	lab.Seed(t)
	secret := apitest.Token(t, lab.Store, "ops", api.RoleOperate)
	acts := &apitest.Actions{Store: lab.Store}
	h := api.New(api.Options{
		Store: lab.Store, Actions: acts, Planner: apitest.Planner{Site: lab.Site},
		Tokens: api.NewTokens(lab.Store, nil, nil), OpenReads: openReads, Heartbeat: time.Second,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{lab: lab, actions: acts, url: srv.URL, token: secret}
}

type call struct {
	method, path, token, body, contentType string
	header                                 map[string]string
}

func (f *fixture) do(t *testing.T, c call) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(c.method, f.url+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.body != "" || c.contentType != "" {
		ct := c.contentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestAuth(t *testing.T) {
	t.Parallel()
	closed := serve(t, false)
	open := serve(t, true)
	cycle := `{"action":"power-cycle","machine":"web-02","reason":"test"}`
	tests := map[string]struct {
		f    *fixture
		c    call
		want int
	}{
		"read without token":               {closed, call{method: "GET", path: "/api/v1/machines"}, 401},
		"read with a wrong token":          {closed, call{method: "GET", path: "/api/v1/machines", token: "metal_wrong"}, 401},
		"read with a token":                {closed, call{method: "GET", path: "/api/v1/machines", token: "TOKEN"}, 200},
		"open read without token":          {open, call{method: "GET", path: "/api/v1/machines"}, 200},
		"open read with a wrong token":     {open, call{method: "GET", path: "/api/v1/runs", token: "metal_wrong"}, 401},
		"action without token":             {closed, call{method: "POST", path: "/api/v1/actions", body: cycle}, 401},
		"action without token, open reads": {open, call{method: "POST", path: "/api/v1/actions", body: cycle}, 401},
		"action with a wrong token":        {open, call{method: "POST", path: "/api/v1/actions", body: cycle, token: "metal_x"}, 401},
		"action with a token":              {open, call{method: "POST", path: "/api/v1/actions", body: cycle, token: "TOKEN"}, 200},
		"unknown route":                    {open, call{method: "GET", path: "/api/v1/nope"}, 404},
		"wrong method":                     {open, call{method: "DELETE", path: "/api/v1/machines/web-01", token: "TOKEN"}, 405},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.c.token == "TOKEN" {
				tc.c.token = tc.f.token
			}
			status, body := tc.f.do(t, tc.c)
			if status != tc.want {
				t.Fatalf("status %d, want %d: %s", status, tc.want, body)
			}
			if status >= 400 {
				var e api.Error
				if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
					t.Errorf("error body %q is not {\"error\": ...}", body)
				}
			}
		})
	}
	// Only the authorised action reached the engine, and it was recorded.
	if diff := cmp.Diff([]string{"power-cycle web-02"}, open.actions.Calls()); diff != "" {
		t.Errorf("actions carried out (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string(nil), closed.actions.Calls()); diff != "" {
		t.Errorf("actions on the closed server (-want +got):\n%s", diff)
	}
	evs, err := open.lab.Store.Events(context.Background(), inventory.EventQuery{Machine: "web-02"})
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	if last.Kind != api.EventAction || !strings.Contains(last.Message, `power-cycle of machine web-02 by "ops" (reason: test): done`) {
		t.Errorf("last event = %+v, want the recorded action", last)
	}
}

func TestWhoamiNamesTheToken(t *testing.T) {
	t.Parallel()
	f := serve(t, false)
	status, body := f.do(t, call{method: "GET", path: "/api/v1/whoami", token: f.token})
	if status != 200 || !strings.Contains(string(body), `"token": "ops"`) {
		t.Fatalf("whoami = %d %s", status, body)
	}
}

// TestCSRF: the API answers browsers from other sites with nothing they
// can use: cross-site writes are refused, form bodies too, and no CORS
// header ever lets a page read an answer.
func TestCSRF(t *testing.T) {
	t.Parallel()
	f := serve(t, true)
	body := `{"action":"reprovision","machine":"web-01"}`
	tests := map[string]struct {
		c    call
		want int
	}{
		"cross-site fetch":          {call{header: map[string]string{"Sec-Fetch-Site": "cross-site"}}, 403},
		"foreign origin":            {call{header: map[string]string{"Origin": "http://evil.example"}}, 403},
		"form post":                 {call{contentType: "application/x-www-form-urlencoded"}, 415},
		"text/plain (no preflight)": {call{contentType: "text/plain"}, 415},
		"same origin":               {call{header: map[string]string{"Sec-Fetch-Site": "same-origin"}}, 200},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := tc.c
			c.method, c.path, c.token, c.body = "POST", "/api/v1/actions", f.token, body
			status, b := f.do(t, c)
			if status != tc.want {
				t.Fatalf("status %d, want %d: %s", status, tc.want, b)
			}
		})
	}
	req, _ := http.NewRequest("OPTIONS", f.url+"/api/v1/actions", nil)
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("preflight allowed origin %q", got)
	}
	if diff := cmp.Diff([]string{"reprovision web-01"}, f.actions.Calls()); diff != "" {
		t.Errorf("actions carried out (-want +got):\n%s", diff)
	}
}

func TestHostileBodies(t *testing.T) {
	t.Parallel()
	f := serve(t, false)
	tests := map[string]struct {
		body string
		want int
	}{
		"empty":              {"", 400},
		"not json":           {"power-cycle web-01", 400},
		"truncated":          {`{"action":"power-cycle","machine":"web-01"`, 400},
		"array":              {`[]`, 400},
		"null":               {`null`, 400},
		"two values":         {`{"action":"power-cycle","machine":"web-01"} {"action":"halt","run":"run-1"}`, 400},
		"unknown field":      {`{"action":"power-cycle","machine":"web-01","force":true}`, 400},
		"wrong type":         {`{"action":5,"machine":"web-01"}`, 400},
		"unknown action":     {`{"action":"format-disk","machine":"web-01"}`, 400},
		"missing machine":    {`{"action":"reprovision"}`, 400},
		"halt of a machine":  {`{"action":"halt","machine":"web-01"}`, 400},
		"control characters": {`{"action":"power-cycle","machine":"web-01","reason":"a\u0000b"}`, 400},
		"reason too long":    {`{"action":"power-cycle","machine":"web-01","reason":"` + strings.Repeat("x", 501) + `"}`, 400},
		"larger than 64 KiB": {`{"action":"power-cycle","machine":"web-01","reason":"` + strings.Repeat("x", 70000) + `"}`, 400},
		"deeply nested":      {strings.Repeat("[", 100000) + strings.Repeat("]", 100000), 400},
		"invalid utf-8":      {"{\"action\":\"power-cycle\",\"machine\":\"web-01\",\"reason\":\"\xff\xfe\"}", 200},
		"unknown machine":    {`{"action":"power-cycle","machine":"nope"}`, 404},
		"unknown run":        {`{"action":"halt","run":"nope"}`, 404},
		"duplicate keys":     {`{"action":"halt","action":"power-cycle","machine":"web-01"}`, 200},
		"halt the run":       {`{"action":"halt","run":"run-1","reason":"bad image"}`, 200},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			status, b := f.do(t, call{method: "POST", path: "/api/v1/actions", token: f.token, body: tc.body, contentType: "application/json"})
			if status != tc.want {
				t.Fatalf("status %d, want %d: %s", status, tc.want, b)
			}
			var e api.Error
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("answer is not JSON: %s", b)
			}
			if tc.want >= 400 && e.Error == "" {
				t.Errorf("no error message: %s", b)
			}
		})
	}
	run, err := f.lab.Store.ApplyRun(context.Background(), "run-1")
	if err != nil {
		t.Fatal(err)
	}
	if run.State != inventory.RunInterrupted || run.HaltReason == "" {
		t.Errorf("run after halt: state %s, halt reason %q", run.State, run.HaltReason)
	}
}

func TestFailedActionIsRecorded(t *testing.T) {
	t.Parallel()
	f := serve(t, false)
	f.actions.FailPowerCycle = true
	status, b := f.do(t, call{method: "POST", path: "/api/v1/actions", token: f.token, body: `{"action":"power-cycle","machine":"db-01"}`})
	if status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %s", status, b)
	}
	evs, err := f.lab.Store.Events(context.Background(), inventory.EventQuery{Machine: "db-01"})
	if err != nil {
		t.Fatal(err)
	}
	if last := evs[len(evs)-1]; last.Kind != api.EventAction || !strings.Contains(last.Message, "failed: bmc unreachable") {
		t.Errorf("last event = %+v, want the failed action", last)
	}
}

func TestReads(t *testing.T) {
	t.Parallel()
	f := serve(t, true)

	var list api.MachineList
	getJSON(t, f, "/api/v1/machines?label=rack=r01", &list)
	var names []string
	for _, m := range list.Machines {
		names = append(names, m.Name)
		if m.Intent.Token != "" || m.Intent.Task.UserData != "(redacted)" {
			t.Errorf("machine %s leaks its boot token or user data: %+v", m.Name, m.Intent)
		}
	}
	if diff := cmp.Diff([]string{"web-01", "web-02"}, names); diff != "" {
		t.Errorf("machines in rack r01 (-want +got):\n%s", diff)
	}
	getJSON(t, f, "/api/v1/machines?q=192.0.2.21", &list)
	if len(list.Machines) != 1 || list.Machines[0].Name != "db-01" {
		t.Errorf("search by IP found %+v", list.Machines)
	}
	if status, b := f.do(t, call{method: "GET", path: "/api/v1/machines?label=rack"}); status != 400 {
		t.Errorf("malformed label filter: %d %s", status, b)
	}

	var m inventory.Machine
	getJSON(t, f, "/api/v1/machines/db-01", &m)
	if m.Identity.Labels["rack"] != "r02" || m.Hardware == nil || m.Agent == nil {
		t.Errorf("machine db-01 = %+v", m)
	}
	if status, _ := f.do(t, call{method: "GET", path: "/api/v1/machines/nope"}); status != 404 {
		t.Errorf("unknown machine: status %d", status)
	}

	var evs api.EventList
	getJSON(t, f, "/api/v1/machines/web-01/events", &evs)
	var kinds []inventory.EventKind
	for _, e := range evs.Events {
		kinds = append(kinds, e.Kind)
	}
	if diff := cmp.Diff([]inventory.EventKind{"dhcp-ack", "tftp", "kernel"}, kinds); diff != "" {
		t.Errorf("events of web-01 (-want +got):\n%s", diff)
	}
	getJSON(t, f, "/api/v1/events?limit=2", &evs)
	if len(evs.Events) != 2 {
		t.Errorf("limit=2 gave %d events", len(evs.Events))
	}
	for _, bad := range []string{"limit=0", "limit=5000", "after=-1", "after=x", "follow=maybe"} {
		if status, b := f.do(t, call{method: "GET", path: "/api/v1/events?" + bad}); status != 400 {
			t.Errorf("events?%s: status %d %s", bad, status, b)
		}
	}

	var run api.Run
	getJSON(t, f, "/api/v1/runs/run-1", &run)
	var order []string
	for _, s := range run.Steps {
		order = append(order, s.Machine)
	}
	// db-01 sorts first by name, but web-02 is the canary (batch 1).
	if run.Canary != 1 || run.Failed != 1 || run.Done != 1 || len(order) != 3 || run.Steps[0].Batch != 1 {
		t.Errorf("run = %+v", run)
	}
	var runs api.RunList
	getJSON(t, f, "/api/v1/runs", &runs)
	if len(runs.Runs) != 1 || runs.Runs[0].ID != "run-1" {
		t.Errorf("runs = %+v", runs)
	}

	var p plan.Plan
	getJSON(t, f, "/api/v1/plan", &p)
	if p.Site != "testlab" || p.Summary.Create != 3 || p.Digest == "" {
		t.Errorf("plan = %+v", p)
	}
	want := plan.Compute(f.lab.Site, nil)
	if diff := cmp.Diff(*want, p); diff != "" {
		t.Errorf("plan differs from plan.Compute (-want +got):\n%s", diff)
	}
}

func getJSON(t *testing.T, f *fixture, path string, v any) {
	t.Helper()
	status, b := f.do(t, call{method: "GET", path: path})
	if status != 200 {
		t.Fatalf("GET %s: %d %s", path, status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

// TestFollowEvents reads the event stream over a real connection: the
// backlog, then an event appended while it is open, then, reconnecting
// with Last-Event-ID, only what came after.
func TestFollowEvents(t *testing.T) {
	t.Parallel()
	f := serve(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := openStream(t, ctx, f, "/api/v1/machines/web-02/events?follow=true", "")
	var got []inventory.Event
	for len(got) < 3 {
		got = append(got, stream.next(t))
	}
	ev, err := f.lab.Store.AppendEvent(ctx, inventory.Event{Machine: "web-02", MAC: "52:54:00:00:02:02", Kind: inventory.EventAgent, Message: "writing 50%"})
	if err != nil {
		t.Fatal(err)
	}
	// Another machine's event is not in this stream.
	if _, err := f.lab.Store.AppendEvent(ctx, inventory.Event{Machine: "db-01", Kind: inventory.EventAgent, Message: "elsewhere"}); err != nil {
		t.Fatal(err)
	}
	next := stream.next(t)
	if next.Seq != ev.Seq || next.Message != "writing 50%" {
		t.Errorf("live event = %+v, want %+v", next, ev)
	}
	stream.close()

	ev2, err := f.lab.Store.AppendEvent(ctx, inventory.Event{Machine: "web-02", Kind: inventory.EventAgent, Message: "done"})
	if err != nil {
		t.Fatal(err)
	}
	again := openStream(t, ctx, f, "/api/v1/events?machine=web-02", itoa(ev.Seq))
	if e := again.next(t); e.Seq != ev2.Seq {
		t.Errorf("after Last-Event-ID %d got %+v, want seq %d", ev.Seq, e, ev2.Seq)
	}
	again.close()

	if status, _ := f.do(t, call{method: "GET", path: "/api/v1/events?follow=true"}); status != 401 {
		t.Errorf("stream without token: %d", status)
	}
}

type sse struct {
	resp *http.Response
	r    *bufio.Reader
}

func openStream(t *testing.T, ctx context.Context, f *fixture, path, lastID string) *sse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", f.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sse{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next reads messages until an "event" one, skipping keep-alives.
func (s *sse) next(t *testing.T) inventory.Event {
	t.Helper()
	var id, kind, data string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if kind == "event" {
				var e inventory.Event
				if err := json.Unmarshal([]byte(data), &e); err != nil {
					t.Fatalf("event data %q: %v", data, err)
				}
				if id != itoa(e.Seq) {
					t.Errorf("id %q for event seq %d", id, e.Seq)
				}
				return e
			}
			if kind == "error" {
				t.Fatalf("stream error: %s", data)
			}
			id, kind, data = "", "", ""
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			kind = line[7:]
		case strings.HasPrefix(line, "data: "):
			data += line[6:]
		}
	}
}

func (s *sse) close() { s.resp.Body.Close() }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestOpenAPIDocumentsEveryRoute keeps openapi.yaml and the handler in
// step: every route is documented with its method, and every documented
// path is served.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	var doc struct {
		OpenAPI string                          `yaml:"openapi"`
		Paths   map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	served := map[string]bool{}
	for _, r := range api.Routes() {
		served[r.Pattern] = true
		ops, ok := doc.Paths[r.Pattern]
		if !ok {
			t.Errorf("route %s %s is not in openapi.yaml", r.Method, r.Pattern)
			continue
		}
		if _, ok := ops[strings.ToLower(r.Method)]; !ok {
			t.Errorf("route %s %s: openapi.yaml documents the path but not the method", r.Method, r.Pattern)
		}
	}
	for p := range doc.Paths {
		if !served[p] {
			t.Errorf("openapi.yaml documents %s, which the API does not serve", p)
		}
	}
	// And the document is served as it is in the repository.
	f := serve(t, true)
	status, b := f.do(t, call{method: "GET", path: "/api/v1/openapi.yaml"})
	if status != 200 || string(b) != string(api.OpenAPI()) {
		t.Errorf("GET openapi.yaml: %d, %d bytes", status, len(b))
	}
}
