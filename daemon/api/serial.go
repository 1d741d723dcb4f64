package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/inventory"
)

// EventConsole records a serial console session: who watched, whether
// they could type, for how long and how much they typed.
const EventConsole inventory.EventKind = "console"

// Console is the first text message of a serial console WebSocket, and
// its last when the console ends: binary messages carry the console's
// bytes both ways.
type Console struct {
	Machine string `json:"machine,omitempty"`
	// Mode is "interactive" (what is sent reaches the machine: role
	// operate) or "read-only" (what is sent is dropped).
	Mode string `json:"mode,omitempty"`
	// Closed says why the console ended.
	Closed string `json:"closed,omitempty"`
}

const (
	ModeInteractive = "interactive"
	ModeReadOnly    = "read-only"
)

// keysLimit bounds one message of keys from a browser: a paste, not a file.
const keysLimit = 16 << 10

// SerialConsole serves people's sessions on machines' serial consoles
// over WebSockets, for the API's route and the web console's.
type SerialConsole struct {
	Hub    *serial.Hub
	Store  inventory.Store
	Logger *slog.Logger
}

// Serve joins the browser's WebSocket to machine's console. who names
// the person ("" for a reader of open reads); interactive lets their
// keys through, else they are dropped. Each session is recorded as two
// events, when it opens and when it closes.
func (sc SerialConsole) Serve(w http.ResponseWriter, r *http.Request, machine, who string, interactive bool) {
	log := sc.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := sc.Store.Machine(r.Context(), machine)
	if errors.Is(err, inventory.ErrNotFound) {
		http.Error(w, "no machine "+machine, http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, "the inventory store did not answer: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	// Accept checks that the page asking is served from this host: a
	// page elsewhere cannot open an operator's console with their cookie.
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the request
	}
	defer c.CloseNow()
	c.SetReadLimit(keysLimit)
	ctx := r.Context()
	sess, err := sc.Hub.Attach(ctx, m.Name)
	if err != nil {
		log.Warn("serial console", "machine", m.Name, "err", err)
		_ = writeConsole(ctx, c, Console{Machine: m.Name, Closed: err.Error()})
		c.Close(websocket.StatusTryAgainLater, "no console")
		return
	}
	defer sess.Close()

	mode := ModeReadOnly
	if interactive {
		mode = ModeInteractive
	}
	person := fmt.Sprintf("%q", who)
	if who == "" {
		person = "a reader without a login"
	}
	start := time.Now()
	sc.event(m, fmt.Sprintf("serial console opened by %s (%s)", person, mode))
	log.Info("serial console opened", "machine", m.Name, "token", who, "mode", mode, "client", r.RemoteAddr)
	if err := writeConsole(ctx, c, Console{Machine: m.Name, Mode: mode}); err != nil {
		return
	}

	var typed, dropped int
	keysDone := make(chan error, 1)
	go func() {
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				keysDone <- err
				return
			}
			if !interactive {
				dropped += len(data)
				continue
			}
			if _, err := sess.Write(data); err != nil {
				keysDone <- err
				return
			}
			typed += len(data)
		}
	}()

	closed := "the console ended (the machine powered off or restarted)"
	func() {
		for {
			select {
			case chunk, ok := <-sess.Output():
				if !ok {
					if err := sess.Err(); err != nil {
						closed = "the console ended: " + err.Error()
					}
					_ = writeConsole(ctx, c, Console{Closed: closed})
					c.Close(websocket.StatusNormalClosure, "console ended")
					c.CloseNow() // the key reader returns
					<-keysDone
					return
				}
				if err := c.Write(ctx, websocket.MessageBinary, chunk); err != nil {
					closed = "the browser left"
					c.CloseNow()
					<-keysDone
					return
				}
			case <-keysDone:
				closed = "the browser left"
				return
			}
		}
	}()
	msg := fmt.Sprintf("serial console closed by %s (%s) after %s: %d bytes typed", person, mode, time.Since(start).Round(time.Second), typed)
	if dropped > 0 {
		msg += fmt.Sprintf(", %d bytes refused (read-only)", dropped)
	}
	sc.event(m, msg+"; "+closed)
	log.Info("serial console closed", "machine", m.Name, "token", who, "typed", typed, "refused", dropped, "why", closed)
}

func (sc SerialConsole) event(m inventory.Machine, msg string) {
	// The session's request may be gone by now; the record is still due.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sc.Store.AppendEvent(ctx, inventory.Event{Time: time.Now().UTC(), Machine: m.Name, MAC: m.MAC, Kind: EventConsole, Message: msg}); err != nil && sc.Logger != nil {
		sc.Logger.Warn("record serial console event", "machine", m.Name, "err", err)
	}
}

func writeConsole(ctx context.Context, c *websocket.Conn, v Console) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Write(ctx, websocket.MessageText, data)
}

// console serves GET /api/v1/machines/{name}/console: a token with role
// operate (or admin) types, a read token or a reader of open reads
// watches.
func (s *server) console(w http.ResponseWriter, r *http.Request) {
	if s.opts.Serial == nil {
		writeError(w, http.StatusNotFound, "this server knows no serial consoles (metal serve --console-socket PATTERN)")
		return
	}
	id, _ := r.Context().Value(whoKey{}).(Identity)
	SerialConsole{Hub: s.opts.Serial, Store: s.opts.Store, Logger: s.log}.Serve(w, r, r.PathValue("name"), id.Name, id.Role.Allows(RoleOperate))
}
