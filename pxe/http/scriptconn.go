package http

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// scriptConns reads the connections of one boot listener. Each has its
// own goroutine, which answers the script requests it reads (what
// parseScriptRequest takes) and, at the first request of any other kind,
// hands the connection to net/http with the bytes it read and did not
// answer: kernels and images, the API, a malformed request, everything
// but a script is net/http's, as it always was. Scripts are fetched at
// every netboot, and net/http's own work per request (a header map, a
// request and a response writer, its buffers and deadlines) was six
// times the script handler's.
type scriptConns struct {
	s       *Server
	ctx     context.Context
	handoff *handoffListener
	closing atomic.Bool
	mu      sync.Mutex
	conns   map[*scriptConn]struct{}
}

func newScriptConns(ctx context.Context, s *Server, handoff *handoffListener) *scriptConns {
	return &scriptConns{s: s, ctx: ctx, handoff: handoff, conns: make(map[*scriptConn]struct{})}
}

// accept serves ln's connections until ln fails, retrying as net/http
// does after a temporary failure (too many open files).
func (cs *scriptConns) accept(ln net.Listener) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Temporary() { // as net/http's Serve decides
				return err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			cs.s.log.Warn("http accept failed; retrying", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		sc := &scriptConn{cs: cs, c: c, buf: make([]byte, scriptConnBuffer)}
		if !cs.add(sc) {
			c.Close()
			continue
		}
		go sc.serve()
	}
}

func (cs *scriptConns) add(c *scriptConn) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closing.Load() {
		return false
	}
	cs.conns[c] = struct{}{}
	return true
}

func (cs *scriptConns) remove(c *scriptConn) {
	cs.mu.Lock()
	delete(cs.conns, c)
	cs.mu.Unlock()
}

// shutdown closes every connection waiting for a request at once and the
// others once they are (an answer being written finishes), or after
// grace; it returns when none is left.
func (cs *scriptConns) shutdown(grace time.Duration) {
	cs.closing.Store(true)
	end := time.Now().Add(grace)
	for {
		cs.mu.Lock()
		left := len(cs.conns)
		late := time.Now().After(end)
		for c := range cs.conns {
			if late || c.idle.Load() {
				c.c.Close()
			}
		}
		cs.mu.Unlock()
		if left == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const (
	// scriptConnBuffer holds a script request (iPXE's are ~150 bytes)
	// or several pipelined ones. A request longer than that goes to
	// net/http, whose limit is Server.MaxHeaderBytes.
	scriptConnBuffer = 4096
	// maxPendingAnswers is how much of the answers to pipelined
	// requests is written at once.
	maxPendingAnswers = 64 << 10
	// maxIdleSlack bounds how much earlier than IdleTimeout an idle
	// connection may be closed (an eighth of it at most): its read
	// deadline is moved only when it is that much out of date, not at
	// every request.
	maxIdleSlack = time.Second
)

// scriptConn is one connection, read by its own goroutine (serve).
type scriptConn struct {
	cs *scriptConns
	c  net.Conn
	// buf[r:w] is read and not answered yet.
	buf  []byte
	r, w int
	// out holds answers not written yet.
	out []byte
	// idle is set while the connection waits for a request: shutdown
	// closes it then.
	idle atomic.Bool
	// served says a request was answered: from then on, the wait for
	// the next one is bounded by IdleTimeout, as net/http's.
	served bool
	// deadline is the read deadline last set; partial when the bytes
	// of the request in buf began to come, if they did.
	deadline, partial time.Time
	// client is the client's address, clientText as net/http writes
	// it (for the access log, formatted once it is needed).
	client     netip.Addr
	clientText string
}

func (c *scriptConn) serve() {
	s := c.cs.s
	handed := false
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("http connection panic", "client", c.c.RemoteAddr().String(),
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
		if !handed {
			c.cs.remove(c)
			c.c.Close()
		}
	}()
	if ap, ok := addrPort(c.c.RemoteAddr()); ok {
		c.client = ap.Addr().Unmap()
	}
	// A new connection's first request has ReadHeaderTimeout, as in
	// net/http.
	c.setDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
	for {
		for c.r < c.w {
			req, n, res := parseScriptRequest(c.buf[c.r:c.w])
			if res == needMore {
				break
			}
			if res == isScript && req.file {
				switch c.answerFile(req) {
				case fileSent:
					c.r += n
					c.served, c.partial = true, time.Time{}
					continue
				case fileCut:
					return
				}
			} else if res == isScript && c.answer(req) {
				c.r += n
				c.served, c.partial = true, time.Time{}
				if len(c.out) >= maxPendingAnswers && !c.flush() {
					return
				}
				continue
			}
			// net/http answers this request and every one after it,
			// after the answers written so far.
			if !c.flush() {
				return
			}
			handed = c.handOff()
			return
		}
		if !c.flush() {
			return
		}
		switch {
		case c.r == c.w:
			c.r, c.w = 0, 0
		case c.r == 0 && c.w == len(c.buf):
			// A request longer than buf: net/http reads it.
			handed = c.handOff()
			return
		case c.w == len(c.buf):
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		}
		if err := c.read(); err != nil {
			if errors.Is(err, io.EOF) && c.r < c.w {
				// A request cut short: net/http reads it and the same
				// end of stream, and says what it says (a 400).
				handed = c.handOff()
			}
			return
		}
	}
}

// read reads more of the connection into buf, first bounding the wait as
// net/http does: IdleTimeout for the next request, ReadHeaderTimeout from
// the first bytes of one (or from the start, for the first). An error
// ends the connection: the read's (end of stream, a deadline, a reset),
// or errShutdown.
func (c *scriptConn) read() error {
	now := time.Now()
	switch cfg := &c.cs.s.cfg; {
	case c.r < c.w:
		if c.partial.IsZero() {
			c.partial = now
			if d := now.Add(cfg.ReadHeaderTimeout); c.deadline.After(d) {
				c.setDeadline(d)
			}
		}
	case c.served:
		if d := now.Add(cfg.IdleTimeout); c.deadline.Before(d.Add(-min(maxIdleSlack, cfg.IdleTimeout/8))) {
			c.setDeadline(d)
		}
	}
	c.idle.Store(true)
	defer c.idle.Store(false)
	if c.cs.closing.Load() {
		return errShutdown
	}
	n, err := c.c.Read(c.buf[c.w:])
	c.w += n
	return err
}

var errShutdown = errors.New("http server shutting down")

func (c *scriptConn) setDeadline(t time.Time) {
	c.deadline = t
	c.c.SetReadDeadline(t)
}

// flush writes the answers in out; false if the connection failed.
func (c *scriptConn) flush() bool {
	if len(c.out) == 0 {
		return true
	}
	_, err := c.c.Write(c.out)
	c.out = c.out[:0]
	return err == nil
}

// handOff gives the connection to net/http, with what buf holds that was
// not answered yet; false if net/http is no longer serving.
func (c *scriptConn) handOff() bool {
	c.cs.remove(c)
	c.c.SetReadDeadline(time.Time{}) // net/http sets its own
	var conn net.Conn = c.c
	if c.r < c.w {
		conn = &replayConn{Conn: c.c, pending: c.buf[c.r:c.w]}
	}
	return c.cs.handoff.give(conn)
}

// answer appends the answer to req to c.out when it is a script served as
// it is (200), and says so. Any other answer (not a MAC, an unknown
// machine, a refusal, a failure, a panic) is net/http's to give, which
// asks the policy again: a refusal's security report, its log line at
// info, its error page are made in one place.
func (c *scriptConn) answer(req scriptRequest) (ok bool) {
	s := c.cs.s
	defer func() {
		if p := recover(); p != nil {
			s.log.Warn("script request handed to net/http after a panic", "panic", fmt.Sprint(p))
			ok = false
		}
	}()
	start := time.Now()
	target := string(req.target)
	path, query := target[:req.pathLen], ""
	if req.pathLen < len(target) {
		query = target[req.pathLen+1:]
	}
	mac, err := net.ParseMAC(path[len(ScriptPrefix):])
	if err != nil {
		return false
	}
	ctx := c.cs.ctx
	sc, outcome, _ := s.machineScript(ctx, mac, c.client, query, c.localAddr)
	if outcome != scriptServed {
		return false
	}
	c.out = s.appendScript(c.out, sc, start, req.head)
	method := nethttp.MethodGet
	if req.head {
		method = nethttp.MethodHead
	}
	answered(ctx, s.log, slog.LevelDebug, s.cfg.Observe, Request{Method: method, Path: path, Client: c.client, MAC: mac,
		Status: nethttp.StatusOK, Bytes: int64(len(sc.body)), Duration: time.Since(start)}, c.remoteText, nil)
	return true
}

// What answerFile did.
type fileAnswer int

const (
	// fileHandedOn: nothing sent; net/http answers the request.
	fileHandedOn fileAnswer = iota
	// fileSent: the whole file went out; the connection goes on.
	fileSent
	// fileCut: the answer began and could not end (the client went, the
	// file shrank): the connection must close, as net/http closes it.
	fileCut
)

// answerFile sends the file a plain GET asks for (parseFileRequest), as
// the file handler (serveFile) under net/http sends it: the same status,
// headers and body, access log line and Observe call. Kernels, initrds
// and images are the largest part of a netboot's requests, and through
// net/http each cost a hand-over of the connection, a goroutine reading
// in the background and a wake-up of another thread to run it: in a boot
// storm on two cores, the time to a file's first byte was twice nginx's.
// Anything but a file sent whole (a name refused or not found, a root not
// configured) is left to net/http, which says what it says.
func (c *scriptConn) answerFile(req scriptRequest) fileAnswer {
	s := c.cs.s
	tc, ok := c.c.(*net.TCPConn)
	if !ok || !s.fastFiles {
		return fileHandedOn
	}
	start := time.Now()
	root := s.cfg.Files
	if req.images {
		root = s.cfg.Images
	}
	if root == nil {
		return fileHandedOn
	}
	f, fi, err := root.Open(string(req.name))
	if err != nil {
		return fileHandedOn
	}
	defer f.Close()
	if !c.flush() {
		return fileCut
	}
	size := fi.Size()
	c.out = appendFileHeader(c.out, fi, s.dates.at(start)[0])
	// The header in the body's first segment, then the size it announced.
	sent, err := sendWhole(tc, c.out, f, size)
	c.out = c.out[:0]
	answered(c.cs.ctx, s.log, slog.LevelInfo, s.cfg.Observe, Request{Method: nethttp.MethodGet, Path: string(req.target), Client: c.client,
		Status: nethttp.StatusOK, Bytes: sent, Duration: time.Since(start)}, c.remoteText, nil)
	if err != nil || sent != size {
		return fileCut
	}
	s.filesSent.Add(1)
	return fileSent
}

// appendFileHeader appends the header net/http writes for serveFile's
// answer to a whole-file GET: http.ServeContent's Accept-Ranges,
// Content-Length and Last-Modified (unless the time is unknown), the
// handler's Content-Type and ETag, in net/http's order (sorted, then
// Date).
func appendFileHeader(out []byte, fi fs.FileInfo, date string) []byte {
	out = append(out, "HTTP/1.1 200 OK\r\nAccept-Ranges: bytes\r\nContent-Length: "...)
	out = strconv.AppendInt(out, fi.Size(), 10)
	out = append(out, "\r\nContent-Type: application/octet-stream\r\nEtag: "...)
	out = appendETag(out, fi)
	if mt := fi.ModTime(); !mt.IsZero() && !mt.Equal(time.Unix(0, 0)) {
		out = append(out, "\r\nLast-Modified: "...)
		out = mt.UTC().AppendFormat(out, nethttp.TimeFormat)
	}
	out = append(out, "\r\nDate: "...)
	out = append(out, date...)
	return append(out, "\r\n\r\n"...)
}

func (c *scriptConn) localAddr() (netip.AddrPort, bool) { return addrPort(c.c.LocalAddr()) }

func (c *scriptConn) remoteText() string {
	if c.clientText == "" {
		c.clientText = c.c.RemoteAddr().String()
	}
	return c.clientText
}

// appendScript appends sc's answer to out, as net/http writes what
// writeScript sets: the handler's headers in order, then the Content-Length
// net/http adds to a body it held whole; a HEAD's without the body.
func (s *Server) appendScript(out []byte, sc script, start time.Time, head bool) []byte {
	out = append(out, "HTTP/1.1 200 OK\r\nCache-Control: "...)
	out = append(out, scriptNoStore[0]...)
	if sc.length != nil {
		out = append(out, "\r\nContent-Length: "...)
		out = append(out, sc.length[0]...)
	}
	out = append(out, "\r\nContent-Type: "...)
	out = append(out, scriptType[0]...)
	out = append(out, "\r\nDate: "...)
	out = append(out, s.dates.at(start)[0]...)
	if sc.length == nil {
		out = append(out, "\r\nContent-Length: "...)
		out = strconv.AppendInt(out, int64(len(sc.body)), 10)
	}
	out = append(out, "\r\n\r\n"...)
	if !head {
		out = append(out, sc.body...)
	}
	return out
}

// handoffListener is the listener net/http serves: the connections the
// script connections hand to it.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error // why done was closed, if not by Close; set before
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.end(nil)
	return nil
}

// end stops Accept, which returns err from then on (net.ErrClosed if
// nil): the boot listener's failure is net/http's Serve's.
func (l *handoffListener) end(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// give hands c to net/http; false if it serves no more.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// replayConn is a connection handed to net/http: what was read from it
// and not answered is read again first.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// ReadFrom keeps net/http's sendfile(2) path for files, which it takes
// only from a connection that is an io.ReaderFrom.
func (c *replayConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite lets net/http end its half of the connection before closing
// it, as it does with a TCP connection.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
