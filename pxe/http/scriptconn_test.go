package http

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/netip"
	"net/textproto"
	"os/exec"
	pathpkg "path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/http/httpguts"

	"github.com/metal-dev/metal/pxe"
)

// netHTTPOnly serves ts's handler with net/http alone, as the boot
// listener did before it answered scripts on its own connections: what
// those must answer byte for byte.
func netHTTPOnly(t *testing.T, ts *testServer) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	srv := &nethttp.Server{Handler: ts.srv.Handler(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelWarn)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// exchange sends raw from the address from to addr, ends its half of the
// connection and reads everything the server answers until it closes.
func exchange(t *testing.T, addr, from, raw string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp4", addr)
	must(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read: %v (after %q)", err, b)
	}
	return maskDates(string(b))
}

var dateHeader = regexp.MustCompile(`(?m)^Date: [^\r\n]*`)

// maskDates hides Date headers, which tell when, not what.
func maskDates(s string) string { return dateHeader.ReplaceAllString(s, "Date: (masked)") }

// clientPort is the port of a client's address ending a line.
var clientPort = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+):\d+$`)

// sideEffects is what a server did besides answering: its access log
// lines (without times and ports), what it told Observe and Security,
// panics it logged.
type sideEffects struct {
	Log      []string
	Observed []Request
	Alarms   []string
	Panics   int
}

// effects returns the side effects since mark, and the new mark.
func (ts *testServer) effects(mark [3]int) (sideEffects, [3]int) {
	var e sideEffects
	recs := ts.logs.records("http request")
	for _, r := range recs[mark[0]:] {
		delete(r, "time")
		delete(r, "duration")
		if host, _, err := net.SplitHostPort(fmt.Sprint(r["client"])); err == nil {
			r["client"] = host
		}
		e.Log = append(e.Log, fmt.Sprint(r))
	}
	obs, n := ts.observed.since(mark[1])
	for i := range obs {
		obs[i].Duration = 0
	}
	e.Observed = obs
	for len(ts.alarms) > 0 {
		e.Alarms = append(e.Alarms, clientPort.ReplaceAllString(<-ts.alarms, "$1"))
	}
	panics := len(ts.logs.records("http handler panic"))
	e.Panics = panics - mark[2]
	return e, [3]int{len(recs), n, panics}
}

// scriptRequestCases are raw requests, alone or pipelined, that the
// script connections answer or hand to net/http.
var scriptRequestCases = map[string]string{
	"lease":              "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"token":              "GET /ipxe/" + macOther + "?token=s3cret-token HTTP/1.1\r\nHost: 192.0.2.1\r\nUser-Agent: iPXE/1.21.1\r\n\r\n",
	"iPXE keep-alive":    "GET /ipxe/" + macLocal + " HTTP/1.1\r\nConnection: keep-alive\r\nHost: 192.0.2.1\r\nUser-Agent: iPXE/1.21.1\r\n\r\n",
	"HEAD":               "HEAD /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"long script":        "GET /ipxe/" + macLarge + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"long script, HEAD":  "HEAD /ipxe/" + macLarge + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"hyphens":            "GET /ipxe/52-54-00-00-00-01 HTTP/1.1\r\nhost: x\r\n\r\n",
	"fragment":           "GET /ipxe/" + macOther + "?token=s3cret-token#f HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n",
	"escaped token":      "GET /ipxe/" + macOther + "?a=%zz;&token=s3cret%2Dtoken&token=x HTTP/1.1\r\nHost: x\r\n\r\n",
	"agent task":         "GET /ipxe/" + macAgent + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"pipelined":          strings.Repeat("GET /ipxe/"+macLocal+" HTTP/1.1\r\nHost: x\r\n\r\nHEAD /ipxe/"+macLarge+" HTTP/1.1\r\nHost: x\r\n\r\n", 3),
	"then a file":        "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\nGET /files/sub/kernel HTTP/1.1\r\nHost: x\r\n\r\nGET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"then malformed":     "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\nGET /ipxe/" + macLocal + " HTTP/1.1\r\nBad Header: x\r\n\r\n",
	"many pipelined":     strings.Repeat("GET /ipxe/"+macLarge+" HTTP/1.1\r\nHost: x\r\n\r\n", 40),
	"forbidden":          "GET /ipxe/" + macOther + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"wrong token":        "GET /ipxe/" + macOther + "?token=nope HTTP/1.1\r\nHost: x\r\n\r\n",
	"spent":              "GET /ipxe/" + macSpent + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"unknown MAC":        "GET /ipxe/52:54:00:00:00:99 HTTP/1.1\r\nHost: x\r\n\r\n",
	"not a MAC":          "GET /ipxe/52:54 HTTP/1.1\r\nHost: x\r\n\r\n",
	"hostile intent":     "GET /ipxe/" + macBad + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"panicking policy":   "GET /ipxe/" + macPanic + " HTTP/1.1\r\nHost: x\r\n\r\nGET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"escaped colons":     "GET /ipxe/52%3A54%3A00%3A00%3A00%3A01 HTTP/1.1\r\nHost: x\r\n\r\n",
	"dot segment":        "GET /ipxe/.. HTTP/1.1\r\nHost: x\r\n\r\n",
	"chain":              "GET /ipxe/boot.ipxe HTTP/1.1\r\nHost: x\r\n\r\n",
	"two segments":       "GET /ipxe/" + macLocal + "/x HTTP/1.1\r\nHost: x\r\n\r\n",
	"double slash":       "GET /ipxe//" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"absolute target":    "GET http://x/ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST":               "POST /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
	"lower-case method":  "get /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"HTTP/1.0":           "GET /ipxe/" + macLocal + " HTTP/1.0\r\nHost: x\r\n\r\n",
	"HTTP/1.0 kept":      "GET /ipxe/" + macLocal + " HTTP/1.0\r\nConnection: keep-alive\r\nHost: x\r\n\r\n",
	"close":              "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\n",
	"no Host":            "GET /ipxe/" + macLocal + " HTTP/1.1\r\n\r\n",
	"two Hosts":          "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
	"bad Host":           "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x y\r\n\r\n",
	"empty Host":         "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost:\r\n\r\n",
	"bare LF":            "GET /ipxe/" + macLocal + " HTTP/1.1\nHost: x\n\n",
	"folded header":      "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
	"space before colon": "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost : x\r\n\r\n",
	"control byte":       "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
	"high byte":          "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nX-A: caf\xc3\xa9\r\n\r\n",
	"NUL in target":      "GET /ipxe/" + macLocal + "\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
	"chunked":            "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"empty body":         "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
	"expect":             "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
	"upgrade":            "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	"huge header":        "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nX-A: " + strings.Repeat("a", 6000) + "\r\n\r\n",
	"too large":          "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\nX-A: " + strings.Repeat("a", 70000) + "\r\n\r\n",
	"cut short":          "GET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n",
	"garbage":            "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	"HTTP/2 preface":     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	// Files: a plain GET is sent by the script connections, anything
	// else by net/http.
	"file":                 "GET /files/sub/kernel HTTP/1.1\r\nHost: x\r\nUser-Agent: iPXE/1.21.1\r\n\r\n",
	"files pipelined":      "GET /files/sub/kernel HTTP/1.1\r\nHost: x\r\n\r\nGET /ipxe/" + macLocal + " HTTP/1.1\r\nHost: x\r\n\r\nGET /files/sub/empty HTTP/1.1\r\nHost: x\r\n\r\nGET /files/sub/link HTTP/1.1\r\nHost: x\r\n\r\n",
	"file, kept alive":     "GET /files/sub/kernel HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
	"file, then close":     "GET /files/sub/kernel HTTP/1.1\r\nHost: x\r\n\r\nGET /files/sub/kernel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	"empty file":           "GET /files/sub/empty HTTP/1.1\r\nHost: x\r\n\r\n",
	"file HEAD":            "HEAD /files/sub/kernel HTTP/1.1\r\nHost: x\r\n\r\n",
	"file range":           "GET /files/sub/kernel HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n",
	"file, if-none-match":  "GET /files/sub/kernel HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\"\r\n\r\n",
	"file, if-modified":    "GET /files/sub/kernel HTTP/1.1\r\nHost: x\r\nif-modified-since: Mon, 07 Dec 2099 08:00:00 GMT\r\n\r\n",
	"file missing":         "GET /files/sub/none HTTP/1.1\r\nHost: x\r\n\r\nGET /files/sub/kernel HTTP/1.1\r\nHost: x\r\n\r\n",
	"file is a directory":  "GET /files/sub HTTP/1.1\r\nHost: x\r\n\r\n",
	"file escapes":         "GET /files/escape HTTP/1.1\r\nHost: x\r\n\r\n",
	"file dot segment":     "GET /files/sub/../sub/kernel HTTP/1.1\r\nHost: x\r\n\r\n",
	"file, double slash":   "GET /files/sub//kernel HTTP/1.1\r\nHost: x\r\n\r\n",
	"file, trailing slash": "GET /files/sub/ HTTP/1.1\r\nHost: x\r\n\r\n",
	"file escaped":         "GET /files/sub/%6bernel HTTP/1.1\r\nHost: x\r\n\r\n",
	"file query":           "GET /files/sub/kernel?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
	"file, no Host":        "GET /files/sub/kernel HTTP/1.1\r\n\r\n",
	"file, HTTP/1.0":       "GET /files/sub/kernel HTTP/1.0\r\n\r\n",
	"image, no root":       "GET /images/disk.raw HTTP/1.1\r\nHost: x\r\n\r\n",
	"files root":           "GET /files/ HTTP/1.1\r\nHost: x\r\n\r\n",
}

// TestScriptConnsAnswerAsNetHTTP sends each raw request, over TCP, to the
// boot listener and to net/http alone serving the same handler: the bytes
// answered (Date aside), the access log, what Observe and Security are
// told, and the panics logged are the same.
func TestScriptConnsAnswerAsNetHTTP(t *testing.T) {
	ts := startServerWith(t, slog.LevelDebug, true)
	plain := netHTTPOnly(t, ts)
	fast := ts.listener.Addr().String()
	_, mark := ts.effects([3]int{})
	for name, raw := range scriptRequestCases {
		t.Run(name, func(t *testing.T) {
			var answers [2]string
			var effects [2]sideEffects
			for i, addr := range []string{fast, plain} {
				answers[i] = exchange(t, addr, "127.0.0.1", raw)
				effects[i], mark = ts.effects(mark)
			}
			if answers[0] == "" && name != "cut short" && name != "garbage" {
				t.Errorf("no answer")
			}
			if diff := cmp.Diff(answers[1], answers[0]); diff != "" {
				t.Errorf("answer (-net/http +boot listener):\n%s", diff)
			}
			if diff := cmp.Diff(effects[1], effects[0], cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("side effects (-net/http +boot listener):\n%s", diff)
			}
		})
	}
}

// TestFilesOnScriptConns: a plain GET of a file is sent by the script
// connections (the cases above only say the answers are the same), and
// one the mux might route elsewhere is not.
func TestFilesOnScriptConns(t *testing.T) {
	for name, tc := range map[string]struct {
		extra map[string]nethttp.Handler
		raw   string
		sent  int64
	}{
		"three files":        {raw: scriptRequestCases["files pipelined"], sent: 3},
		"a range":            {raw: scriptRequestCases["file range"], sent: 0},
		"a missing file":     {raw: scriptRequestCases["file missing"], sent: 0}, // the next is net/http's too
		"an API elsewhere":   {extra: map[string]nethttp.Handler{"GET /metrics": nethttp.NotFoundHandler()}, raw: scriptRequestCases["file"], sent: 1},
		"a route over files": {extra: map[string]nethttp.Handler{"GET /files/sub/kernel": nethttp.NotFoundHandler()}, raw: scriptRequestCases["file"], sent: 0},
		"a host's routes":    {extra: map[string]nethttp.Handler{"x/": nethttp.NotFoundHandler()}, raw: scriptRequestCases["file"], sent: 0},
	} {
		t.Run(name, func(t *testing.T) {
			ts := startServerExtra(t, tc.extra)
			exchange(t, ts.listener.Addr().String(), "127.0.0.1", tc.raw)
			if got := ts.srv.filesSent.Load(); got != tc.sent {
				t.Errorf("%d files sent by the script connections, want %d", got, tc.sent)
			}
		})
	}
}

// TestScriptConnsCurl fetches scripts with curl, several on one
// connection and a HEAD, from the boot listener and from net/http alone:
// the same headers and bodies, and the connection kept alive.
func TestScriptConnsCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not found: install the Debian package curl")
	}
	ts := startServer(t)
	plain := netHTTPOnly(t, ts)
	paths := []string{"/ipxe/" + macLocal, "/ipxe/" + macOther + "?token=s3cret-token", "/ipxe/" + macLarge, "/ipxe/" + macOther, "/ipxe/" + macLocal}
	tests := map[string][]string{
		"GET, one connection": {"-sS", "-i", "-w", "connects=%{num_connects}\n"},
		"HEAD":                {"-sS", "-I", "-w", "connects=%{num_connects}\n"},
	}
	for name, args := range tests {
		t.Run(name, func(t *testing.T) {
			var out [2]string
			for i, addr := range []string{ts.listener.Addr().String(), plain} {
				a := slices.Clone(args)
				for _, p := range paths {
					a = append(a, "http://"+addr+p)
				}
				b, err := exec.Command("curl", a...).CombinedOutput()
				if err != nil {
					t.Fatalf("curl %s: %v\n%s", a, err, b)
				}
				out[i] = maskDates(string(b))
			}
			if diff := cmp.Diff(out[1], out[0]); diff != "" {
				t.Errorf("curl's output (-net/http +boot listener):\n%s", diff)
			}
			if n := strings.Count(out[0], "connects=0"); n != len(paths)-1 {
				t.Errorf("%d of %d requests on a kept connection, want all but the first:\n%s", n, len(paths), out[0])
			}
		})
	}
}

// TestScriptConnsTimeouts: a connection is closed when its first request
// does not come within ReadHeaderTimeout, when one is trickled in slower
// than that (slowloris), and when no next request comes within
// IdleTimeout.
func TestScriptConnsTimeouts(t *testing.T) {
	const header, idle = 300 * time.Millisecond, 600 * time.Millisecond
	mac := "52:54:00:00:00:61"
	p := &policy{intents: map[string]pxe.Intent{mac: {Action: pxe.ActionInstall, Kernel: "/k", Token: "tok"}}}
	srv, err := New(Config{Policy: p, ReadHeaderTimeout: header, IdleTimeout: idle, Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	}()
	script := "GET /ipxe/" + mac + "?token=tok HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := map[string]struct {
		// send runs on the connection before the server is waited for;
		// it returns when the server closed it or it is done.
		send    func(c net.Conn, r *bufio.Reader) error
		atLeast time.Duration
	}{
		"silent": {send: func(net.Conn, *bufio.Reader) error { return nil }, atLeast: header},
		"trickled": {send: func(c net.Conn, _ *bufio.Reader) error {
			for _, b := range []byte(script[:len(script)-2] + strings.Repeat("X-A: a\r\n", 100)) {
				if _, err := c.Write([]byte{b}); err != nil {
					return nil // closed by the server: what is wanted
				}
				time.Sleep(20 * time.Millisecond)
			}
			return errors.New("the whole trickled request was taken")
		}, atLeast: header},
		"idle after a script": {send: func(c net.Conn, r *bufio.Reader) error {
			if _, err := io.WriteString(c, script); err != nil {
				return err
			}
			return readResponse(r)
		}, atLeast: idle - idle/8},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp4", ln.Addr().String())
			must(t, err)
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			r := bufio.NewReader(c)
			start := time.Now()
			if err := tc.send(c, r); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			n, err := io.Copy(io.Discard, r)
			took := time.Since(start)
			if err != nil || n != 0 {
				t.Fatalf("after %v: %d more bytes, %v; want the server to close the connection", took, n, err)
			}
			if name != "trickled" && time.Since(sent) < tc.atLeast-50*time.Millisecond {
				t.Errorf("closed %v after the last request, before its timeout %v", time.Since(sent), tc.atLeast)
			}
		})
	}
}

// FuzzParseScriptRequest checks parseScriptRequest against net/http's
// own reading of the same bytes: what it takes for a script request,
// net/http reads as the same GET or HEAD of the same path and query, of
// the same length, kept alive, without a body, with the one valid Host
// net/http's server wants; and it never asks for more bytes once a
// request's end is in sight.
func FuzzParseScriptRequest(f *testing.F) {
	for _, raw := range scriptRequestCases {
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, n, res := parseScriptRequest(b)
		switch res {
		case needMore:
			if bytes.Contains(b, []byte("\r\n\r\n")) {
				t.Fatalf("needMore for %q, which holds a request's end", b)
			}
			return
		case notScript:
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		rest := "\x00rest"
		br := bufio.NewReader(io.MultiReader(bytes.NewReader(b[:n]), strings.NewReader(rest)))
		r, err := nethttp.ReadRequest(br)
		if err != nil {
			t.Fatalf("a script request to parseScriptRequest, refused by net/http: %v\n%q", err, b[:n])
		}
		if left, _ := io.ReadAll(br); string(left) != rest {
			t.Fatalf("net/http's request ends elsewhere: %q left, want %q\n%q", left, rest, b[:n])
		}
		method := "GET"
		if req.head {
			method = "HEAD"
		}
		path, query, _ := strings.Cut(string(req.target), "?")
		got := fmt.Sprint(r.Method, " ", r.URL.Path, " ", r.URL.RawPath, " ", r.URL.RawQuery, " ", r.Proto, " ", r.Close, " ", r.ContentLength, " ", r.TransferEncoding)
		want := fmt.Sprint(method, " ", path, "  ", query, " HTTP/1.1 false 0 []")
		if got != want || path != string(req.target[:req.pathLen]) {
			t.Fatalf("net/http reads %s, parseScriptRequest %s (path %q)\n%q", got, want, req.target[:req.pathLen], b[:n])
		}
		if req.file {
			// A file: a GET of a path the mux routes to a file handler
			// unchanged (path.Clean keeps it), asking for all of it.
			name, ok := strings.CutPrefix(r.URL.Path, filesPrefix)
			images := false
			if !ok {
				name, ok = strings.CutPrefix(r.URL.Path, imagesPrefix)
				images = ok
			}
			if !ok || req.head || name == "" || pathpkg.Clean(r.URL.Path) != r.URL.Path || r.URL.RawQuery != "" {
				t.Fatalf("path %q is not one the file handlers take as it is", r.URL.Path)
			}
			if string(req.name) != name || req.images != images {
				t.Fatalf("parseScriptRequest names file %q (images %v), net/http's path %q", req.name, req.images, r.URL.Path)
			}
			for k := range r.Header {
				if k == "Range" || strings.HasPrefix(k, "If-") {
					t.Fatalf("a whole-file request with %s", k)
				}
			}
		} else if mac, ok := strings.CutPrefix(r.URL.Path, ScriptPrefix); !ok || mac == "" || mac == "boot.ipxe" || mac == "." || mac == ".." || strings.Contains(mac, "/") {
			t.Fatalf("path %q is not one the script handler takes as it is", r.URL.Path)
		}
		// What net/http's server checks beyond ReadRequest, in the header
		// before ReadRequest takes Host out of it.
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b[:n])))
		tp.ReadLine()
		header, err := tp.ReadMIMEHeader()
		must(t, err)
		if hosts := header["Host"]; len(hosts) != 1 || !httpguts.ValidHostHeader(hosts[0]) {
			t.Fatalf("Host %q", hosts)
		}
		for k, vv := range header {
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("header %q: %q, which net/http refuses", k, v)
				}
			}
		}
		for _, k := range []string{"Expect", "Upgrade", "Trailer"} {
			if _, ok := r.Header[k]; ok {
				t.Fatalf("a script request with %s", k)
			}
		}
	})
}

// TestScriptConnsShutdown: a kept-alive connection waiting for its next
// request is closed when the server stops, which does not wait for it.
func TestScriptConnsShutdown(t *testing.T) {
	mac := "52:54:00:00:00:61"
	p := &policy{intents: map[string]pxe.Intent{mac: {Action: pxe.ActionInstall, Kernel: "/k", Token: "tok"}}}
	srv, err := New(Config{Policy: p, Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	c, err := net.Dial("tcp4", ln.Addr().String())
	must(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	if _, err := io.WriteString(c, "GET /ipxe/"+mac+"?token=tok HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	must(t, readResponse(r))
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	case <-time.After(shutdownGrace):
		t.Fatal("ServeListener waited for an idle connection")
	}
	if n, err := io.Copy(io.Discard, r); err != nil || n != 0 {
		t.Errorf("idle connection after shutdown: %d bytes, %v; want it closed", n, err)
	}
}
