// Package storeagent answers the agent protocol (pxe/agentapi) from the
// inventory store: it records what agents report and hands them the
// tasks the converge engine wrote.
//
// facts records the machine's hardware. A MAC the store does not know
// becomes a machine named "m-" and the MAC's hex digits
// ("m-525400aabbcc") in state discovered, which an operator adopts.
//
// task returns the task in the machine's boot intent, without its secret.
//
// status records the agent's progress and result for one task in
// Machine.Agent, which the engine waits on, and appends an agent event to
// the machine's timeline whenever the phase or step changes (byte counts
// alone update Machine.Agent without an event, so a long write does not
// flood the log).
//
// Only the agent booted for a machine's current task may speak for it:
// every call about a machine with a task carries the task's one-time
// secret (inventory.AgentTask.Secret), compared in constant time. The
// source address proves nothing: on the boot network an address, and a
// MAC, are easily taken. The first call with the secret marks the task
// started, and the netboot server then refuses the script that carries
// it; a call without the secret gets 403 and a security event in the
// machine's timeline. Without a task there is nothing secret to reveal:
// task answers "none", facts are taken only about a MAC the store does not
// know or a discovered machine, and status is a conflict.
package storeagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/agentapi"
)

// Config is the server side's configuration.
type Config struct {
	// Store is where facts and reports are written. Required.
	Store inventory.Store
	// PollSeconds is how long an agent without a task waits before asking
	// again (default 5).
	PollSeconds int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server answers the agent protocol.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux

	// alarms bounds security events to one per MAC per alarmEvery, so a
	// host hammering the API with bad secrets cannot flood the event log.
	alarmMu sync.Mutex
	alarms  map[string]time.Time
}

// alarmEvery is the least time between two security events of one MAC.
const alarmEvery = 10 * time.Second

// errStale marks a report about a task that is no longer current.
var errStale = errors.New("stale task")

// errRepeat is a status that repeats the final report already recorded for
// a task metal has since moved on from.
var errRepeat = errors.New("repeated final report")

// repeatsFinal says whether st is the final report (done or failed) that
// rec already holds for the same task.
func repeatsFinal(rec *inventory.AgentStatus, st agentapi.Status) bool {
	return rec != nil && rec.TaskID == st.TaskID && rec.Phase == inventory.AgentPhase(st.Phase) &&
		(st.Phase == agentapi.PhaseDone || st.Phase == agentapi.PhaseFailed)
}

// New returns the protocol's handler; mount it at Prefix.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("agentapi: config without a store")
	}
	if cfg.PollSeconds <= 0 {
		cfg.PollSeconds = 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "agentapi"), mux: http.NewServeMux()}
	s.mux.HandleFunc("POST "+agentapi.Prefix+"v1/{mac}/facts", s.machine(verbFacts, s.facts))
	s.mux.HandleFunc("GET "+agentapi.Prefix+"v1/{mac}/task", s.machine(verbTask, s.task))
	s.mux.HandleFunc("POST "+agentapi.Prefix+"v1/{mac}/status", s.machine(verbStatus, s.status))
	// The installed OS's phone-home: cloud-init cannot send a header, and
	// the machine may have left its lease for a static address, so the
	// per-task secret in the path is what authorises it.
	s.mux.HandleFunc("POST "+agentapi.Prefix+"v1/{mac}/ready/{secret}", s.ready)
	return s, nil
}

// ServeHTTP recovers a panicking handler, so a bad request costs a 500 and
// never the daemon.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("agent handler panic", "path", r.URL.Path, "panic", fmt.Sprint(p))
			http.Error(w, "metal: internal error", http.StatusInternalServerError)
		}
	}()
	s.mux.ServeHTTP(w, r)
}

type machineHandler func(w http.ResponseWriter, r *http.Request, mac net.HardwareAddr)

// verb names what a request does, for the checks in machine.
type verb int

const (
	verbFacts verb = iota
	verbTask
	verbStatus
)

// machine parses the MAC of the path and lets only that machine's agent
// through. A machine with an agent task is spoken for only with the task's
// one-time secret (X-Metal-Token), whatever the request's source address:
// an address, and even a MAC, is easily taken on the boot network. The
// first call with the secret marks the task started, after which the boot
// script carrying it is not served again. Without a task there is nothing
// secret to reveal: anyone may ask for the (empty) task, and facts are
// taken only about a MAC the store does not know or a discovered machine
// (discovery is open by nature; see SECURITY.md). Status reports always
// need a task and its secret.
func (s *Server) machine(v verb, h machineHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mac, err := net.ParseMAC(r.PathValue("mac"))
		if err != nil || len(mac) != 6 {
			http.Error(w, "metal: not a MAC address: "+r.PathValue("mac"), http.StatusNotFound)
			return
		}
		ctx := r.Context()
		m, err := s.cfg.Store.MachineByMAC(ctx, mac.String())
		known := err == nil
		if err != nil && !errors.Is(err, inventory.ErrNotFound) {
			s.log.Error("agent request: machine lookup", "mac", mac.String(), "err", err)
			http.Error(w, "metal: cannot read the machine: "+err.Error(), http.StatusInternalServerError)
			return
		}
		token := r.Header.Get(agentapi.TokenHeader)
		if known && m.Intent.Task != nil {
			t := m.Intent.Task
			if t.Secret == "" || subtle.ConstantTimeCompare([]byte(token), []byte(t.Secret)) != 1 {
				s.refuse(ctx, w, r, m.Name, mac, token != "")
				return
			}
			if m.Agent == nil || m.Agent.TaskID != t.ID {
				s.started(ctx, m.Name, mac, t.ID)
			}
			h(w, r, mac)
			return
		}
		switch {
		case v == verbTask:
		case v == verbFacts && (!known || m.State == inventory.StateDiscovered):
		case v == verbStatus:
			// No task: the status handler answers 409, unless the report
			// repeats the final one already recorded (changing nothing).
		default:
			s.log.Warn("agent facts refused: the machine has no agent task", "mac", mac.String(), "client", r.RemoteAddr)
			http.Error(w, "metal: machine "+m.Name+" has no agent task, so no agent may report for it", http.StatusForbidden)
			return
		}
		h(w, r, mac)
	}
}

// refuse answers a request about a machine's task without its secret, and
// records it as a security event.
func (s *Server) refuse(ctx context.Context, w http.ResponseWriter, r *http.Request, name string, mac net.HardwareAddr, hadToken bool) {
	why := "without the task's secret"
	if hadToken {
		why = "with a wrong secret"
	}
	s.log.Warn("agent request refused "+why, "mac", mac.String(), "machine", name, "client", r.RemoteAddr, "path", r.URL.Path)
	if s.alarm(mac) {
		s.securityEvent(ctx, name, mac, fmt.Sprintf("agent call %s %s refused: %s, from %s", r.Method, r.URL.Path, why, r.RemoteAddr))
	}
	http.Error(w, "metal: only the agent booted for machine "+mac.String()+"'s current task may speak for it: "+
		"send the task's secret (metal.token= on the agent's kernel command line) in "+agentapi.TokenHeader,
		http.StatusForbidden)
}

// alarm says whether a security event about mac may be recorded now.
func (s *Server) alarm(mac net.HardwareAddr) bool {
	now := s.cfg.Now()
	s.alarmMu.Lock()
	defer s.alarmMu.Unlock()
	if s.alarms == nil || len(s.alarms) > 4096 {
		s.alarms = map[string]time.Time{}
	}
	if last, ok := s.alarms[string(mac)]; ok && now.Sub(last) < alarmEvery {
		return false
	}
	s.alarms[string(mac)] = now
	return true
}

// started marks the machine's task as taken by its agent: from now on the
// boot script that carries the secret is refused.
func (s *Server) started(ctx context.Context, name string, mac net.HardwareAddr, taskID string) {
	_, err := inventory.UpdateMachine(ctx, s.cfg.Store, name, func(m *inventory.Machine) error {
		if m.Intent.Task == nil || m.Intent.Task.ID != taskID || (m.Agent != nil && m.Agent.TaskID == taskID) {
			return errStale
		}
		m.Agent = &inventory.AgentStatus{TaskID: taskID, Phase: inventory.AgentRunning, Step: "started", UpdatedAt: s.cfg.Now().UTC()}
		return nil
	})
	if errors.Is(err, errStale) {
		return
	}
	if err != nil {
		s.log.Warn("mark agent task started", "machine", name, "err", err)
		return
	}
	s.event(ctx, name, mac, "agent task "+taskID+": started; its boot script is not served again")
}

func (s *Server) securityEvent(ctx context.Context, name string, mac net.HardwareAddr, msg string) {
	_, err := s.cfg.Store.AppendEvent(ctx, inventory.Event{
		Time: s.cfg.Now().UTC(), Machine: name, MAC: mac.String(), Kind: inventory.EventSecurity, Message: msg,
	})
	if err != nil {
		s.log.Warn("append security event", "machine", name, "err", err)
	}
}

// decode reads one JSON value of at most limit bytes into v; anything after
// it is an error, so two concatenated reports are not half-accepted.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("metal: body larger than %d bytes", limit), http.StatusRequestEntityTooLarge)
			return false
		}
		http.Error(w, "metal: reading body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		http.Error(w, "metal: malformed JSON: "+err.Error(), http.StatusBadRequest)
		return false
	}
	if dec.More() {
		http.Error(w, "metal: malformed JSON: data after the value", http.StatusBadRequest)
		return false
	}
	return true
}

func (s *Server) facts(w http.ResponseWriter, r *http.Request, mac net.HardwareAddr) {
	var hw agentapi.Hardware
	if !decode(w, r, agentapi.MaxFactsBytes, &hw) {
		return
	}
	if err := hw.Validate(); err != nil {
		http.Error(w, "metal: facts: "+err.Error(), http.StatusBadRequest)
		return
	}
	rec := hardwareRecord(hw)
	rec.ReportedAt = s.cfg.Now().UTC()
	ctx := r.Context()
	name, created, err := s.recordFacts(ctx, mac, rec)
	if err != nil {
		s.log.Error("record facts", "mac", mac.String(), "err", err)
		http.Error(w, "metal: cannot record facts: "+err.Error(), http.StatusInternalServerError)
		return
	}
	msg := fmt.Sprintf("agent reported facts: %d CPU threads, %d MiB memory, %d disks, %d NICs",
		hw.CPU.Threads, hw.MemoryBytes>>20, len(hw.Disks), len(hw.NICs))
	if created {
		msg = "discovered; " + msg
	}
	s.event(ctx, name, mac, msg)
	s.log.Info("agent facts", "mac", mac.String(), "machine", name, "discovered", created)
	w.WriteHeader(http.StatusNoContent)
}

// recordFacts stores hw on the machine with mac, creating a discovered
// machine for a MAC the store does not know.
func (s *Server) recordFacts(ctx context.Context, mac net.HardwareAddr, hw inventory.Hardware) (name string, created bool, err error) {
	for attempt := 0; attempt < 8; attempt++ {
		m, err := s.cfg.Store.MachineByMAC(ctx, mac.String())
		if errors.Is(err, inventory.ErrNotFound) {
			m = inventory.Machine{Name: DiscoveredName(mac), MAC: mac.String(), Hardware: &hw}
			if err := m.SetState(inventory.StateDiscovered, "agent reported from an unknown MAC", s.cfg.Now()); err != nil {
				return "", false, err
			}
			_, err = s.cfg.Store.PutMachine(ctx, m)
			if errors.Is(err, inventory.ErrConflict) {
				continue // another report created it meanwhile
			}
			return m.Name, err == nil, err
		}
		if err != nil {
			return "", false, err
		}
		_, err = inventory.UpdateMachine(ctx, s.cfg.Store, m.Name, func(m *inventory.Machine) error {
			m.Hardware = &hw
			return nil
		})
		return m.Name, false, err
	}
	return "", false, fmt.Errorf("machine of %s: %w", mac, inventory.ErrConflict)
}

func (s *Server) task(w http.ResponseWriter, r *http.Request, mac net.HardwareAddr) {
	resp := agentapi.TaskResponse{PollSeconds: s.cfg.PollSeconds}
	m, err := s.cfg.Store.MachineByMAC(r.Context(), mac.String())
	switch {
	case errors.Is(err, inventory.ErrNotFound):
		// Not reported yet: the agent reports facts, then asks again.
	case err != nil:
		s.log.Error("task lookup", "mac", mac.String(), "err", err)
		http.Error(w, "metal: cannot read the machine: "+err.Error(), http.StatusInternalServerError)
		return
	case m.Intent.Task != nil && m.Agent != nil && m.Agent.TaskID == m.Intent.Task.ID && m.Agent.Phase == inventory.AgentDone:
		// The agent finished this task and the machine booted the network
		// again before metal moved it on (metal was down, or slow to write
		// the local-disk intent). Doing it again would write the disk twice:
		// the agent waits, and the engine boots the machine from its disk.
	default:
		if t := m.Intent.Task; t != nil {
			resp.Task = taskOf(t)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(resp)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request, mac net.HardwareAddr) {
	var st agentapi.Status
	if !decode(w, r, agentapi.MaxStatusBytes, &st) {
		return
	}
	if err := st.Validate(); err != nil {
		http.Error(w, "metal: status: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	m, err := s.cfg.Store.MachineByMAC(ctx, mac.String())
	if errors.Is(err, inventory.ErrNotFound) {
		http.Error(w, "metal: no machine with MAC "+mac.String()+": report facts first", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, "metal: cannot read the machine: "+err.Error(), http.StatusInternalServerError)
		return
	}
	var changed bool
	_, err = inventory.UpdateMachine(ctx, s.cfg.Store, m.Name, func(m *inventory.Machine) error {
		if m.Intent.Task == nil || m.Intent.Task.ID != st.TaskID {
			if repeatsFinal(m.Agent, st) {
				return errRepeat
			}
			return errStale
		}
		prev := m.Agent
		changed = prev == nil || prev.TaskID != st.TaskID || prev.Phase != inventory.AgentPhase(st.Phase) || prev.Step != st.Step || prev.Error != st.Error
		m.Agent = &inventory.AgentStatus{
			TaskID: st.TaskID, Phase: inventory.AgentPhase(st.Phase), Step: st.Step,
			Done: st.Done, Total: st.Total, Error: st.Error, UpdatedAt: s.cfg.Now().UTC(),
		}
		return nil
	})
	if errors.Is(err, errRepeat) {
		// The agent sent its final report again because the answer to the
		// first was lost (metal restarted in between), and metal has moved
		// the machine on since. Saying 409 would tell the agent the report
		// never counted; it did.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if errors.Is(err, errStale) {
		http.Error(w, "metal: task "+st.TaskID+" is not this machine's current task: ask for the task again", http.StatusConflict)
		return
	}
	if err != nil {
		s.log.Error("record status", "mac", mac.String(), "err", err)
		http.Error(w, "metal: cannot record status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if st.Erase != nil && changed {
		erase := eraseRecord(*st.Erase)
		if _, err := s.cfg.Store.AppendEvent(ctx, inventory.Event{
			Time: s.cfg.Now().UTC(), Machine: m.Name, MAC: mac.String(), Kind: inventory.EventErase,
			Message: "erased " + erase.String(), Erase: erase,
		}); err != nil {
			// The agent sends it again: its report is not acknowledged.
			s.log.Error("record erase", "machine", m.Name, "err", err)
			http.Error(w, "metal: cannot record the erase: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	if changed {
		msg := fmt.Sprintf("agent task %s: %s", st.TaskID, st.Phase)
		if st.Step != "" {
			msg += " (" + st.Step + ")"
		}
		if st.Error != "" {
			msg += ": " + st.Error
		}
		s.event(ctx, m.Name, mac, msg)
	}
	w.WriteHeader(http.StatusNoContent)
}

// ready records that the installed OS of the machine with the path's MAC
// reported in, if the secret is its current install's.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	mac, err := net.ParseMAC(r.PathValue("mac"))
	if err != nil || len(mac) != 6 {
		http.Error(w, "metal: not a MAC address: "+r.PathValue("mac"), http.StatusNotFound)
		return
	}
	// cloud-init posts a form (instance_id, hostname, fqdn): read and
	// drop it, bounded.
	io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, agentapi.MaxStatusBytes))
	sum := sha256.Sum256([]byte(r.PathValue("secret")))
	want := hex.EncodeToString(sum[:])
	ctx := r.Context()
	m, err := s.cfg.Store.MachineByMAC(ctx, mac.String())
	if err != nil && !errors.Is(err, inventory.ErrNotFound) {
		http.Error(w, "metal: cannot read the machine: "+err.Error(), http.StatusInternalServerError)
		return
	}
	refuse := func() {
		s.log.Warn("phone-home refused: not the machine's current install", "mac", mac.String(), "client", r.RemoteAddr)
		http.Error(w, "metal: not the current install of "+mac.String(), http.StatusForbidden)
	}
	if err != nil || m.Ready == nil || subtle.ConstantTimeCompare([]byte(m.Ready.SecretSHA256), []byte(want)) != 1 {
		refuse()
		return
	}
	from := clientIP(r)
	first := false
	_, err = inventory.UpdateMachine(ctx, s.cfg.Store, m.Name, func(m *inventory.Machine) error {
		if m.Ready == nil || m.Ready.SecretSHA256 != want {
			return errStale
		}
		if m.Ready.ReadyAt.IsZero() {
			first = true
			m.Ready.ReadyAt, m.Ready.From = s.cfg.Now().UTC(), from
		}
		return nil
	})
	if errors.Is(err, errStale) {
		refuse()
		return
	}
	if err != nil {
		http.Error(w, "metal: cannot record the phone-home: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if first {
		s.event(ctx, m.Name, mac, "installed OS reported ready (phone-home from "+from+", install task "+m.Ready.TaskID+")")
		s.log.Info("installed OS reported ready", "mac", mac.String(), "machine", m.Name, "from", from)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) event(ctx context.Context, name string, mac net.HardwareAddr, msg string) {
	_, err := s.cfg.Store.AppendEvent(ctx, inventory.Event{
		Time: s.cfg.Now().UTC(), Machine: name, MAC: mac.String(), Kind: inventory.EventAgent, Message: msg,
	})
	if err != nil {
		s.log.Warn("append agent event", "machine", name, "err", err)
	}
}

// clientIP is the address r came from, its zone kept: an installed OS
// that posts before its own address is up (still in duplicate address
// detection) sends from its link-local one, which is only an address with
// the interface it was seen on.
func clientIP(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return ap.Addr().Unmap().String()
}

// DiscoveredName is the name a machine first seen by the agent gets:
// "m-" and its MAC's hex digits.
func DiscoveredName(mac net.HardwareAddr) string {
	return "m-" + strings.ReplaceAll(mac.String(), ":", "")
}
