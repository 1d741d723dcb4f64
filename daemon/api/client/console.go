package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// Console is a session on a machine's serial console through the daemon's
// console hub (daemon.LocalConsolePath): what the machine prints is read
// from it, what is written reaches the machine. The browser terminals
// watching the same machine see the same stream.
type Console struct {
	c   *websocket.Conn
	ctx context.Context

	mode string
	rest []byte // a binary message not yet read whole

	mu     sync.Mutex
	closed string
}

// maxConsoleMessage bounds one message from the daemon: its scrollback
// (64 KiB) comes as one.
const maxConsoleMessage = 1 << 20

// Console joins machine's serial console through the running daemon, for
// as long as ctx lasts or until Close.
func (r *Client) Console(ctx context.Context, machine string) (*Console, error) {
	path := strings.Replace(daemon.LocalConsolePath, "{name}", url.PathEscape(machine), 1)
	c, resp, err := websocket.Dial(ctx, "ws://metal"+path, &websocket.DialOptions{HTTPClient: r.client})
	if err != nil {
		if resp != nil && resp.Body != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			if msg := strings.TrimSpace(string(b)); msg != "" {
				return nil, fmt.Errorf("console of %s through metal serve: %s", machine, msg)
			}
		}
		return nil, fmt.Errorf("console of %s through metal serve: %w", machine, err)
	}
	c.SetReadLimit(maxConsoleMessage)
	var hello api.Console
	_, data, err := c.Read(ctx)
	if err == nil {
		err = json.Unmarshal(data, &hello)
	}
	if err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("console of %s through metal serve: %w", machine, err)
	}
	if hello.Closed != "" {
		c.CloseNow()
		return nil, fmt.Errorf("console of %s through metal serve: %s", machine, hello.Closed)
	}
	return &Console{c: c, ctx: ctx, mode: hello.Mode}, nil
}

// Mode is api.ModeInteractive or api.ModeReadOnly.
func (s *Console) Mode() string { return s.mode }

// Closed is why the daemon ended the console ("" while it runs, or when
// this end closed it).
func (s *Console) Closed() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Read returns the machine's output; io.EOF once the daemon ended the
// console (Closed says why).
func (s *Console) Read(p []byte) (int, error) {
	for len(s.rest) == 0 {
		typ, data, err := s.c.Read(s.ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				return 0, io.EOF
			}
			return 0, err
		}
		if typ == websocket.MessageBinary {
			s.rest = data
			continue
		}
		var msg api.Console
		if json.Unmarshal(data, &msg) == nil && msg.Closed != "" {
			s.mu.Lock()
			s.closed = msg.Closed
			s.mu.Unlock()
			return 0, io.EOF
		}
	}
	n := copy(p, s.rest)
	s.rest = s.rest[n:]
	return n, nil
}

// Write sends keys to the machine.
func (s *Console) Write(p []byte) (int, error) {
	if err := s.c.Write(s.ctx, websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close leaves the console.
func (s *Console) Close() error { return s.c.Close(websocket.StatusNormalClosure, "") }

// ConsoleLog returns the last n lines of machine's console log as the
// running daemon keeps it (none when it keeps none).
func (r *Client) ConsoleLog(ctx context.Context, machine string, n int) ([]string, error) {
	var l api.ConsoleLog
	q := url.Values{"lines": {strconv.Itoa(n)}}
	if err := r.get(ctx, api.Prefix+"machines/"+url.PathEscape(machine)+"/console/log", q, &l); err != nil {
		return nil, err
	}
	return l.Lines, nil
}

// ConsoleLog returns the last n lines of machine's console log: from the
// daemon when r is its client (Reader), else from the state directory
// beside the embedded store at url, where metal serve left it; none for a
// store elsewhere.
func ConsoleLog(ctx context.Context, r inventory.Reader, url, machine string, n int) ([]string, error) {
	if c, ok := r.(*Client); ok {
		return c.ConsoleLog(ctx, machine, n)
	}
	if !strings.HasPrefix(url, "file://") {
		return nil, nil
	}
	return serial.Tail(daemon.ConsoleLogPath(site.DefaultStateDir(url, ""), machine), n)
}
