// Package serial shares machines' serial consoles among the people
// watching them: one connection to a machine's console stream (the lab's
// QEMU serial socket today, a BMC's serial-over-LAN later), its output
// fanned out to every session with what it printed lately, and what the
// interactive sessions type sent back to it.
package serial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
)

// Opener opens a machine's console stream: what the machine prints is
// read from it, what is written reaches the machine's serial input.
type Opener interface {
	OpenSerial(ctx context.Context, machine string) (io.ReadWriteCloser, error)
}

// ErrNoConsole says metal knows no console stream for a machine.
var ErrNoConsole = errors.New("no serial console")

// UnixSockets opens consoles served on unix sockets, as QEMU's
// "-chardev socket,server=on" does: pattern is the socket's path with
// {machine} for the machine's name.
type UnixSockets string

func (p UnixSockets) OpenSerial(ctx context.Context, machine string) (io.ReadWriteCloser, error) {
	if p == "" || strings.ContainsAny(machine, "/\x00") || machine == "." || machine == ".." {
		return nil, fmt.Errorf("console of %s: %w", machine, ErrNoConsole)
	}
	path := strings.ReplaceAll(string(p), "{machine}", machine)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("console of %s: %w (%v; is the machine powered on?)", machine, ErrNoConsole, err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("console of %s: %w", machine, err)
	}
	return c, nil
}

// scrollback is how much of a console's latest output a new session is
// shown first: a screen or two of boot messages.
const scrollback = 64 << 10

// Hub shares each machine's console stream among its sessions. The
// stream is opened by the first session and closed when the last leaves,
// so a console is held only while someone watches it (QEMU serves one
// client at a time).
type Hub struct {
	open Opener

	mu    sync.Mutex
	lines map[string]*line
}

// NewHub returns a hub over open.
func NewHub(open Opener) *Hub { return &Hub{open: open, lines: map[string]*line{}} }

// line is one machine's open console.
type line struct {
	name string
	hub  *Hub
	// ready is closed once the stream is open or failed to open; conn
	// and openErr are set before, and never change after.
	ready   chan struct{}
	conn    io.ReadWriteCloser
	openErr error

	mu       sync.Mutex
	recent   []byte // the last scrollback bytes of output
	sessions map[*Session]bool
	err      error // why the stream ended; set once
	ended    bool
}

// Session is one person's view of a console.
type Session struct {
	line *line
	// out carries output to the session; closed when the stream ends or
	// the session closes. Output a session is too slow for is dropped
	// (Lost counts it) rather than holding up the others.
	out  chan []byte
	lost int

	once sync.Once
}

// Attach joins machine's console, opening its stream if no one watches
// it yet. The session starts with the console's recent output. The stream
// is opened outside the hub's lock: a BMC that takes its time to start
// serial-over-LAN holds up only the sessions of its own machine.
func (h *Hub) Attach(ctx context.Context, machine string) (*Session, error) {
	for {
		h.mu.Lock()
		l := h.lines[machine]
		if l == nil {
			l = &line{name: machine, hub: h, ready: make(chan struct{}), sessions: map[*Session]bool{}}
			h.lines[machine] = l
			h.mu.Unlock()
			l.conn, l.openErr = h.open.OpenSerial(ctx, machine)
			if l.openErr != nil {
				h.mu.Lock()
				if h.lines[machine] == l {
					delete(h.lines, machine)
				}
				h.mu.Unlock()
				close(l.ready)
				return nil, l.openErr
			}
			close(l.ready)
			go l.pump()
		} else {
			h.mu.Unlock()
		}
		select {
		case <-l.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if l.openErr != nil {
			// Another session's open failed: the machine's reason is
			// ours too, unless that session merely gave up waiting.
			if errors.Is(l.openErr, context.Canceled) || errors.Is(l.openErr, context.DeadlineExceeded) {
				continue
			}
			return nil, l.openErr
		}
		return l.join(), nil
	}
}

// join adds a session to an open line.
func (l *line) join() *Session {
	s := &Session{line: l, out: make(chan []byte, 256)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		close(s.out)
		return s
	}
	if len(l.recent) > 0 {
		s.out <- append([]byte(nil), l.recent...)
	}
	l.sessions[s] = true
	return s
}

// pump copies the stream's output to every session until it ends.
func (l *line) pump() {
	buf := make([]byte, 4096)
	for {
		n, err := l.conn.Read(buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...)
			l.mu.Lock()
			l.recent = append(l.recent, chunk...)
			if len(l.recent) > scrollback {
				l.recent = append([]byte(nil), l.recent[len(l.recent)-scrollback:]...)
			}
			for s := range l.sessions {
				select {
				case s.out <- chunk:
				default:
					s.lost += len(chunk)
				}
			}
			l.mu.Unlock()
		}
		if err != nil {
			l.end(err)
			return
		}
	}
}

// end closes the line: every session's output ends, and the next Attach
// opens the stream again.
func (l *line) end(err error) {
	l.hub.mu.Lock()
	if l.hub.lines[l.name] == l {
		delete(l.hub.lines, l.name)
	}
	l.hub.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return
	}
	l.ended = true
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		l.err = err
	}
	for s := range l.sessions {
		close(s.out)
	}
	l.sessions = nil
	l.conn.Close()
}

// Output is the console's output for this session; it is closed when the
// stream ends (the machine powered off, its console went away) or the
// session is closed.
func (s *Session) Output() <-chan []byte { return s.out }

// Write sends keys to the machine's serial input.
func (s *Session) Write(p []byte) (int, error) { return s.line.conn.Write(p) }

// Err says why the stream ended, nil while it runs or when it simply
// closed.
func (s *Session) Err() error {
	s.line.mu.Lock()
	defer s.line.mu.Unlock()
	return s.line.err
}

// Lost is how many bytes of output this session was too slow for.
func (s *Session) Lost() int {
	s.line.mu.Lock()
	defer s.line.mu.Unlock()
	return s.lost
}

// Close leaves the console; the last session to leave closes the stream.
func (s *Session) Close() {
	s.once.Do(func() {
		l, h := s.line, s.line.hub
		h.mu.Lock()
		l.mu.Lock()
		if l.ended {
			l.mu.Unlock()
			h.mu.Unlock()
			return
		}
		delete(l.sessions, s)
		close(s.out)
		last := len(l.sessions) == 0
		if last && h.lines[l.name] == l {
			// No Attach can join it now: the next one opens a new stream.
			delete(h.lines, l.name)
		}
		l.mu.Unlock()
		h.mu.Unlock()
		if last {
			l.end(io.EOF)
		}
	})
}
