// Package api is metal's JSON API over HTTP: machines, their events (with
// a server-sent event stream to follow them), the plan of the loaded site,
// apply runs, and the operator's actions. Every request that changes state
// needs a bearer token; reads need one too unless Options.OpenReads.
//
// The daemon mounts the handler under /api/; openapi.yaml beside this file
// documents every route, and a test keeps the two in step.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/inventory"
)

// Options are what the API serves from.
type Options struct {
	// Store is the inventory read and written. Required.
	Store inventory.Store
	// Actions carry out operator actions; nil answers them with 503.
	Actions Actions
	// Planner computes the current plan; nil answers /plan with 404.
	Planner Planner
	// Tokens verifies bearer tokens; nil refuses every request that
	// needs one.
	Tokens TokenVerifier
	// OpenReads lets GET requests through without a token.
	OpenReads bool
	// Serial shares machines' serial consoles; nil: none.
	Serial *serial.Hub
	// ConsoleLog returns the last n lines of a machine's console log,
	// none when it has no log; nil: the daemon keeps no console logs.
	ConsoleLog func(machine string, n int) ([]string, error)
	Logger     *slog.Logger
	// Heartbeat is how often an idle event stream sends a comment, so
	// proxies keep it open; default 15 s.
	Heartbeat time.Duration
}

// Prefix is where the API lives; the daemon mounts New's handler there.
const Prefix = "/api/v1/"

// maxBody bounds a request body; every body the API takes is small.
const maxBody = 64 << 10

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns the OpenAPI document describing the API.
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }

// Route is one documented route: method, net/http pattern, and the role
// a token needs for it. Read routes need no token when reads are open.
type Route struct {
	Method  string
	Pattern string
	Role    Role
}

// Routes lists every route the handler serves, for the documentation test
// and for callers that print them.
func Routes() []Route {
	return []Route{
		{"GET", "/api/v1/whoami", RoleRead},
		{"GET", "/api/v1/machines", RoleRead},
		{"GET", "/api/v1/machines/{name}", RoleRead},
		{"GET", "/api/v1/machines/{name}/events", RoleRead},
		{"GET", "/api/v1/machines/{name}/console", RoleRead},
		{"GET", "/api/v1/machines/{name}/console/log", RoleRead},
		{"GET", "/api/v1/events", RoleRead},
		{"GET", "/api/v1/plan", RoleRead},
		{"GET", "/api/v1/runs", RoleRead},
		{"GET", "/api/v1/runs/{id}", RoleRead},
		{"POST", "/api/v1/actions", RoleOperate},
		{"GET", "/api/v1/tokens", RoleAdmin},
		{"POST", "/api/v1/tokens", RoleAdmin},
		{"DELETE", "/api/v1/tokens/{name}", RoleAdmin},
		{"GET", "/api/v1/openapi.yaml", RoleRead},
	}
}

type server struct {
	opts Options
	log  *slog.Logger
	act  Performer
}

// New returns the API handler. Its routes start with Prefix.
func New(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	s := &server{opts: opts, log: opts.Logger.With("server", "api"), act: Performer{Store: opts.Store, Actions: opts.Actions}}
	admin := TokensHandler(opts.Tokens, Prefix+"tokens")
	handlers := map[string]http.HandlerFunc{
		"/api/v1/whoami":                      s.whoami,
		"/api/v1/machines":                    s.machines,
		"/api/v1/machines/{name}":             s.machine,
		"/api/v1/machines/{name}/events":      s.machineEvents,
		"/api/v1/machines/{name}/console":     s.console,
		"/api/v1/machines/{name}/console/log": s.consoleLog,
		"/api/v1/events":                      s.events,
		"/api/v1/plan":                        s.plan,
		"/api/v1/runs":                        s.runs,
		"/api/v1/runs/{id}":                   s.run,
		"/api/v1/actions":                     s.action,
		"/api/v1/openapi.yaml":                s.openapi,
		"/api/v1/tokens":                      admin.ServeHTTP,
		"/api/v1/tokens/{name}":               admin.ServeHTTP,
	}
	mux := http.NewServeMux()
	allow := map[string][]string{}
	for _, r := range Routes() {
		mux.Handle(r.Method+" "+r.Pattern, s.authorized(r.Role, handlers[r.Pattern]))
		allow[r.Pattern] = append(allow[r.Pattern], r.Method)
	}
	// A known path asked with another method gets a JSON 405, not the
	// catch-all's 404.
	for pattern, methods := range allow {
		methods := strings.Join(methods, ", ")
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", methods)
			writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use "+methods)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API route: "+r.Method+" "+r.URL.Path+" (see "+Prefix+"openapi.yaml)")
	})
	// Bearer tokens are never sent by a browser on its own, so the API
	// is not open to CSRF; this refuses cross-site browser writes all the
	// same, in case a token ever travels in a cookie.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused: call the API from the same origin or without a browser")
	}))
	return s.recovered(cop.Handler(mux))
}

// recovered turns a panic in a handler into a 500 and a log line: no
// request takes the daemon down.
func (s *server) recovered(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("api handler panic", "method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				writeError(w, http.StatusInternalServerError, "internal error; the server log has the details")
			}
		}()
		h.ServeHTTP(w, r)
	})
}

type whoKey struct{}

// who is the name of the token the request came with ("" if none).
func who(r *http.Request) string {
	id, _ := r.Context().Value(whoKey{}).(Identity)
	return id.Name
}

// BearerToken returns the token of an "Authorization: Bearer" header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// authorized checks the token and its role: always for what needs more
// than reading, for reads unless they are open. A valid token on an open
// read still names who asked. A token refused for its role gets 403 and
// the role it would need; one that is unknown, revoked or expired gets
// 401.
func (s *server) authorized(need Role, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, has := BearerToken(r)
		if !has && need == RoleRead && s.opts.OpenReads {
			h(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="metal"`)
		if !has {
			writeError(w, http.StatusUnauthorized, "this request needs an API token with role "+string(need)+
				": send \"Authorization: Bearer <token>\"; create one with `metal token create --role "+string(need)+"`")
			return
		}
		var ident Identity
		var err error
		if s.opts.Tokens != nil {
			ident, err = s.opts.Tokens.Verify(r.Context(), tok)
		}
		switch {
		case s.opts.Tokens == nil:
			writeError(w, http.StatusUnauthorized, "this server checks no API tokens")
		case errors.Is(err, ErrTokenInvalid) || errors.Is(err, ErrTokenExpired):
			s.log.Warn("api token refused", "method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr, "err", err)
			writeError(w, http.StatusUnauthorized, err.Error()+": create a new one with `metal token create --role ROLE`")
		case err != nil:
			s.log.Error("api token check", "method", r.Method, "path", r.URL.Path, "err", err)
			writeError(w, http.StatusServiceUnavailable, "cannot check the API token: "+err.Error())
		case !ident.Role.Allows(need):
			s.log.Warn("api token lacks the role", "token", ident.Name, "role", ident.Role, "need", need, "method", r.Method, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, fmt.Sprintf("token %q has role %s; %s %s needs role %s (or higher): ask an admin for such a token",
				ident.Name, ident.Role, r.Method, r.URL.Path, need))
		default:
			w.Header().Del("WWW-Authenticate")
			h(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, ident)))
		}
	})
}

func (s *server) whoami(w http.ResponseWriter, r *http.Request) {
	id, _ := r.Context().Value(whoKey{}).(Identity)
	writeJSON(w, http.StatusOK, map[string]any{"token": id.Name, "role": id.Role, "open_reads": s.opts.OpenReads})
}

// MachineList is the body of GET /api/v1/machines.
type MachineList struct {
	Machines []inventory.Machine `json:"machines"`
	// Revision is the store revision the list was read at.
	Revision int64 `json:"revision"`
}

func (s *server) machines(w http.ResponseWriter, r *http.Request) {
	ms, rev, err := s.opts.Store.Machines(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out := MachineList{Machines: []inventory.Machine{}, Revision: rev}
	for _, m := range ms {
		if f.Match(m) {
			out.Machines = append(out.Machines, Redact(m))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) machine(w http.ResponseWriter, r *http.Request) {
	m, err := s.opts.Store.Machine(r.Context(), r.PathValue("name"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, Redact(m))
}

// Redact drops what must not leave the server: the machine's boot token
// (it authorises fetching the machine's script), its agent task's one-time
// secret and phone-home URL (which holds another), its user data (which
// often carries secrets), and a boot cmdline or file URL computed from a
// sensitive variable.
func Redact(m inventory.Machine) inventory.Machine {
	m.Intent.Token = ""
	if m.Intent.Sensitive {
		// Its cmdline or a file's URL came from a sensitive variable.
		hide := func(s string) string {
			if s == "" || strings.HasPrefix(s, "/") {
				return s // metal's own path, no secret in it
			}
			return inventory.Hidden
		}
		if m.Intent.Cmdline != "" {
			m.Intent.Cmdline = inventory.Hidden
		}
		m.Intent.Kernel = hide(m.Intent.Kernel)
		initrds := make([]string, len(m.Intent.Initrds))
		for i, s := range m.Intent.Initrds {
			initrds[i] = hide(s)
		}
		m.Intent.Initrds = initrds
	}
	if m.Intent.Task != nil {
		t := *m.Intent.Task
		if t.UserData != "" {
			t.UserData = "(redacted)"
		}
		t.Secret = ""
		if t.PhoneHome != "" {
			// Its path holds the task's phone-home secret.
			t.PhoneHome = "(redacted)"
		}
		if len(t.PhoneHomeAlso) > 0 {
			t.PhoneHomeAlso = []string{"(redacted)"}
		}
		m.Intent.Task = &t
	}
	return m
}

func (s *server) machineEvents(w http.ResponseWriter, r *http.Request) {
	m, err := s.opts.Store.Machine(r.Context(), r.PathValue("name"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.serveEvents(w, r, inventory.EventQuery{Machine: m.Name, MAC: m.MAC})
}

// ConsoleLog is the answer of GET machines/{name}/console/log.
type ConsoleLog struct {
	Machine string   `json:"machine"`
	Lines   []string `json:"lines"`
}

// consoleLogLines is how many lines of a console log are returned unless
// the request asks for another count.
const consoleLogLines = 20

func (s *server) consoleLog(w http.ResponseWriter, r *http.Request) {
	m, err := s.opts.Store.Machine(r.Context(), r.PathValue("name"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	n := consoleLogLines
	if v := r.URL.Query().Get("lines"); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "lines: a count from 1 to 10000")
			return
		}
	}
	out := ConsoleLog{Machine: m.Name, Lines: []string{}}
	if s.opts.ConsoleLog != nil {
		lines, err := s.opts.ConsoleLog(m.Name, n)
		if err != nil {
			s.log.Warn("console log", "machine", m.Name, "err", err)
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		out.Lines = append(out.Lines, lines...)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) events(w http.ResponseWriter, r *http.Request) {
	q := inventory.EventQuery{}
	if name := r.URL.Query().Get("machine"); name != "" {
		q.Machine = name
		if m, err := s.opts.Store.Machine(r.Context(), name); err == nil {
			q.MAC = m.MAC
		}
	}
	s.serveEvents(w, r, q)
}

func (s *server) plan(w http.ResponseWriter, r *http.Request) {
	if s.opts.Planner == nil {
		writeError(w, http.StatusNotFound, "no site is loaded, so there is no plan: start `metal serve site.hcl`")
		return
	}
	p, err := s.opts.Planner.Plan(r.Context())
	if err != nil {
		s.log.Warn("plan", "err", err)
		writeError(w, http.StatusServiceUnavailable, "plan: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// RunList is the body of GET /api/v1/runs.
type RunList struct {
	Runs []Run `json:"runs"`
}

func (s *server) runs(w http.ResponseWriter, r *http.Request) {
	runs, err := s.opts.Store.ApplyRuns(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := RunList{Runs: make([]Run, 0, len(runs))}
	for _, run := range runs {
		out.Runs = append(out.Runs, NewRun(run))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) run(w http.ResponseWriter, r *http.Request) {
	run, err := s.opts.Store.ApplyRun(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, NewRun(run))
}

// ActionResult is the body answering POST /api/v1/actions.
type ActionResult struct {
	// Event is the event that recorded the action.
	Event inventory.Event `json:"event"`
}

func (s *server) action(w http.ResponseWriter, r *http.Request) {
	req, err := DecodeAction(r)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errMediaType) {
			status = http.StatusUnsupportedMediaType
		}
		writeError(w, status, err.Error())
		return
	}
	ev, err := s.act.Perform(r.Context(), who(r), req)
	switch {
	case err == nil:
		s.log.Info("action", "action", req.Action, "machine", req.Machine, "run", req.Run, "token", who(r))
		writeJSON(w, http.StatusOK, ActionResult{Event: ev})
	case errors.Is(err, errInvalidAction):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNoActions):
		writeError(w, http.StatusServiceUnavailable, err.Error()+": it runs without the converge engine")
	case errors.Is(err, inventory.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrConflict):
		writeJSON(w, http.StatusConflict, actionFailure{err.Error(), ev})
	default:
		s.log.Warn("action failed", "action", req.Action, "machine", req.Machine, "run", req.Run, "token", who(r), "err", err)
		writeJSON(w, http.StatusBadGateway, actionFailure{err.Error(), ev})
	}
}

// actionFailure answers an action that was refused or failed: why, and
// the event that recorded it.
type actionFailure struct {
	Error string          `json:"error"`
	Event inventory.Event `json:"event"`
}

var errMediaType = errors.New("unsupported media type")

// DecodeAction reads an ActionRequest body strictly: JSON only, one
// object, no unknown fields, at most 64 KiB, then validated.
func DecodeAction(r *http.Request) (ActionRequest, error) {
	var req ActionRequest
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return req, fmt.Errorf("%w: send the body as Content-Type: application/json", errMediaType)
	}
	body := http.MaxBytesReader(nil, r.Body, maxBody)
	if err := decodeStrict(body, &req); err != nil {
		return req, err
	}
	return req, req.Validate()
}

// decodeStrict decodes exactly one JSON object into v.
func decodeStrict(rd io.Reader, v any) error {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("body larger than %d bytes", tooBig.Limit)
		}
		if errors.Is(err, io.EOF) {
			return errors.New("empty body: send a JSON object")
		}
		return fmt.Errorf("body is not a valid request: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("body holds more than one JSON value")
	}
	return nil
}

func (s *server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(openAPI)
}

func (s *server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, inventory.ErrNotFound) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	s.log.Error("api store read", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusServiceUnavailable, "inventory store: "+err.Error())
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":"encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)+1))
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}
