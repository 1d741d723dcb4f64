package http

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/bootfiles"
)

// policy is a table-driven BootPolicy; a MAC in panics makes it panic.
type policy struct {
	hosts   map[string]pxe.Host
	intents map[string]pxe.Intent
	panics  string
}

func (p *policy) Host(_ context.Context, mac net.HardwareAddr) (pxe.Host, error) {
	h, ok := p.hosts[mac.String()]
	if !ok {
		return pxe.Host{}, pxe.ErrUnknownHost
	}
	return h, nil
}

func (p *policy) Intent(_ context.Context, mac net.HardwareAddr) (pxe.Intent, error) {
	if mac.String() == p.panics {
		panic("policy exploded")
	}
	in, ok := p.intents[mac.String()]
	if !ok {
		return pxe.Intent{}, pxe.ErrUnknownHost
	}
	return in, nil
}

// namedPolicy is policy answering scripts in one lookup, as the store's
// policy does (pxe.NamedIntents).
type namedPolicy struct{ *policy }

func (p namedPolicy) NamedIntent(ctx context.Context, mac net.HardwareAddr) (pxe.Intent, string, error) {
	in, err := p.Intent(ctx, mac)
	h, _ := p.Host(ctx, mac)
	return in, h.Name, err
}

// leases is a fixed lease table.
type leases map[string]net.IP

func (l leases) LeasedIP(mac net.HardwareAddr) (net.IP, bool) {
	ip, ok := l[mac.String()]
	return ip, ok
}

func (l leases) MACOf(ip net.IP) (net.HardwareAddr, bool) {
	for m, i := range l {
		if i.Equal(ip) {
			mac, _ := net.ParseMAC(m)
			return mac, true
		}
	}
	return nil, false
}

type logBuffer struct{ syncbuf.Buffer }

func (l *logBuffer) records(msg string) []map[string]any {
	return l.Records(func(m map[string]any) bool { return m["msg"] == msg })
}

const (
	macLocal   = "52:54:00:00:00:01" // leased to 127.0.0.1, the test client
	macOther   = "52:54:00:00:00:02" // leased to 127.0.0.2; has a token
	macNoToken = "52:54:00:00:00:03" // leased to 127.0.0.3; no token
	macBad     = "52:54:00:00:00:04" // hostile intent
	macPanic   = "52:54:00:00:00:05"
	macAgent   = "52:54:00:00:00:06" // an agent task, not started
	macSpent   = "52:54:00:00:00:07" // an agent task whose agent started
	macLarge   = "52:54:00:00:00:08" // a script longer than net/http holds whole
	taskSecret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

type testServer struct {
	srv    *Server
	url    string
	logs   *logBuffer
	files  string
	secret string
	// alarms are what the server told Config.Security.
	alarms chan string
	// listener is the one the server serves on.
	listener net.Listener
	// observed is what the server told Config.Observe.
	observed observations
}

// observations collects what a server tells Config.Observe.
type observations struct {
	mu   sync.Mutex
	reqs []Request
}

func (o *observations) observe(r Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reqs = append(o.reqs, r)
}

// since is what was observed after the first n, and how many in all.
func (o *observations) since(n int) ([]Request, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.reqs[n:]), len(o.reqs)
}

func startServer(t testing.TB) *testServer {
	t.Helper()
	return startServerWith(t, slog.LevelInfo, false)
}

// startServerAt starts the test server with its log at level.
func startServerAt(t testing.TB, level slog.Level) *testServer {
	t.Helper()
	return startServerWith(t, level, false)
}

// startServerWith starts the test server with its log at level; named
// gives it a policy that answers scripts in one lookup.
func startServerWith(t testing.TB, level slog.Level, named bool) *testServer {
	t.Helper()
	return startServerFull(t, level, named, nil)
}

// startServerExtra starts a test server with extra routes (Config.Extra).
func startServerExtra(t testing.TB, extra map[string]nethttp.Handler) *testServer {
	t.Helper()
	return startServerFull(t, slog.LevelInfo, false, extra)
}

func startServerFull(t testing.TB, level slog.Level, named bool, extra map[string]nethttp.Handler) *testServer {
	t.Helper()
	ipxeBins, err := bootfiles.FindIPXE(bootfiles.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	ts := &testServer{alarms: make(chan string, 16), logs: &logBuffer{}, files: filepath.Join(base, "files"), secret: filepath.Join(base, "secret")}
	must(t, os.MkdirAll(filepath.Join(ts.files, "sub"), 0o755))
	must(t, os.WriteFile(ts.secret, []byte("secret"), 0o644))
	must(t, os.WriteFile(filepath.Join(ts.files, "sub", "kernel"), bytes.Repeat([]byte("0123456789"), 1000), 0o644))
	must(t, os.Symlink("../secret", filepath.Join(ts.files, "escape")))
	must(t, os.WriteFile(filepath.Join(ts.files, "sub", "empty"), nil, 0o644))
	must(t, os.Symlink("kernel", filepath.Join(ts.files, "sub", "link")))
	files, err := bootfiles.OpenRoot(ts.files)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { files.Close() })

	kernel := pxe.Intent{Action: pxe.ActionInstall, Kernel: "/files/sub/kernel", Initrd: []string{"/files/sub/initrd"}, Cmdline: "console=ttyS0"}
	withToken := kernel
	withToken.Token = "s3cret-token"
	p := &policy{
		hosts: map[string]pxe.Host{macLocal: {Name: "web-01"}},
		intents: map[string]pxe.Intent{
			macLocal:   kernel,
			macOther:   withToken,
			macNoToken: kernel,
			macBad:     {Action: pxe.ActionInstall, Kernel: "/k", Cmdline: "quiet ; shell"},
			macPanic:   kernel,
			macAgent:   {Action: pxe.ActionInstall, Kernel: "/k", Cmdline: "quiet metal.token=forged", AgentSecret: taskSecret},
			macSpent:   {Action: pxe.ActionInstall, Kernel: "/k", AgentSecret: taskSecret, Spent: true},
			macLarge:   {Action: pxe.ActionInstall, Kernel: "/k", Cmdline: strings.Repeat("x=1 ", 750)},
		},
		panics: macPanic,
	}
	l := leases{
		macLocal:   net.IPv4(127, 0, 0, 1),
		macOther:   net.IPv4(127, 0, 0, 2),
		macNoToken: net.IPv4(127, 0, 0, 3),
		macBad:     net.IPv4(127, 0, 0, 1),
		macPanic:   net.IPv4(127, 0, 0, 1),
		macAgent:   net.IPv4(127, 0, 0, 1),
		macSpent:   net.IPv4(127, 0, 0, 1),
		macLarge:   net.IPv4(127, 0, 0, 1),
	}
	var bp pxe.BootPolicy = p
	if named {
		bp = namedPolicy{p}
	}
	srv, err := New(Config{
		Policy: bp, Leases: l, IPXE: ipxeBins, Files: files, Extra: extra,
		Security: func(mac net.HardwareAddr, client net.IP, what string) {
			ts.alarms <- mac.String() + " " + client.String() + ": " + what
		},
		Logger:  slog.New(slog.NewJSONHandler(ts.logs, &slog.HandlerOptions{Level: level})),
		Observe: ts.observed.observe,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.srv, ts.listener = srv, ln
	ts.url = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs.String())
		}
	})
	return ts
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// clientFrom makes requests from a chosen loopback address, so the lease
// check sees a different machine.
func clientFrom(ip string) *nethttp.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &nethttp.Client{
		Transport:     &nethttp.Transport{DialContext: d.DialContext},
		CheckRedirect: func(*nethttp.Request, []*nethttp.Request) error { return nethttp.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

type response struct {
	Status int
	Body   string
}

func get(t *testing.T, c *nethttp.Client, u string, hdr map[string]string) (response, nethttp.Header) {
	t.Helper()
	req, err := nethttp.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(b)}, resp.Header
}

// TestScripts runs with a policy that answers Intent and Host apart, and
// with one that answers both at once (pxe.NamedIntents): the scripts are
// the same.
func TestScripts(t *testing.T) {
	for name, named := range map[string]bool{"Intent and Host": false, "NamedIntent": true} {
		t.Run(name, func(t *testing.T) { testScripts(t, startServerWith(t, slog.LevelInfo, named)) })
	}
}

func testScripts(t *testing.T, ts *testServer) {
	install := "#!ipxe\necho metal: %s install\nkernel /files/sub/kernel initrd=initrd console=ttyS0\ninitrd --name initrd /files/sub/initrd\nboot\n"
	forbidden := "metal: the boot script of %s is served only to the address leased to that MAC, or with its token\n"
	tests := map[string]struct {
		from, path string
		want       response
	}{
		"lease matches":       {from: "127.0.0.1", path: "/ipxe/" + macLocal, want: response{200, fmt.Sprintf(install, "web-01 "+macLocal)}},
		"hyphenated MAC":      {from: "127.0.0.1", path: "/ipxe/52-54-00-00-00-01", want: response{200, fmt.Sprintf(install, "web-01 "+macLocal)}},
		"escaped colons":      {from: "127.0.0.1", path: "/ipxe/52%3A54%3A00%3A00%3A00%3A01", want: response{200, fmt.Sprintf(install, "web-01 "+macLocal)}},
		"two segments":        {from: "127.0.0.1", path: "/ipxe/" + macLocal + "/x", want: response{404, "404 page not found\n"}},
		"another's address":   {from: "127.0.0.1", path: "/ipxe/" + macOther, want: response{403, fmt.Sprintf(forbidden, macOther)}},
		"token":               {from: "127.0.0.1", path: "/ipxe/" + macOther + "?token=s3cret-token", want: response{200, fmt.Sprintf(install, macOther)}},
		"wrong token":         {from: "127.0.0.1", path: "/ipxe/" + macOther + "?token=s3cret-tokem", want: response{403, fmt.Sprintf(forbidden, macOther)}},
		"token prefix":        {from: "127.0.0.1", path: "/ipxe/" + macOther + "?token=s3cret", want: response{403, fmt.Sprintf(forbidden, macOther)}},
		"own address":         {from: "127.0.0.2", path: "/ipxe/" + macOther, want: response{200, fmt.Sprintf(install, macOther)}},
		"empty token":         {from: "127.0.0.1", path: "/ipxe/" + macNoToken + "?token=", want: response{403, fmt.Sprintf(forbidden, macNoToken)}},
		"unknown MAC":         {from: "127.0.0.1", path: "/ipxe/52:54:00:00:00:99", want: response{404, "metal: no machine with MAC 52:54:00:00:00:99\n"}},
		"not a MAC":           {from: "127.0.0.1", path: "/ipxe/nonsense", want: response{404, "metal: not a MAC address\n"}},
		"hostile intent":      {from: "127.0.0.1", path: "/ipxe/" + macBad, want: response{500, "metal: this machine's boot intent cannot be rendered\n"}},
		"panicking policy":    {from: "127.0.0.1", path: "/ipxe/" + macPanic, want: response{500, "metal: internal error\n"}},
		"chain for any iPXE":  {from: "127.0.0.9", path: "/ipxe/boot.ipxe", want: response{200, "#!ipxe\nchain /ipxe/${netX/mac}\n"}},
		"unknown path":        {from: "127.0.0.1", path: "/nope", want: response{404, "404 page not found\n"}},
		"after a panic, fine": {from: "127.0.0.1", path: "/ipxe/" + macLocal, want: response{200, fmt.Sprintf(install, "web-01 "+macLocal)}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, _ := get(t, clientFrom(tc.from), ts.url+tc.path, nil)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("GET %s from %s (-want +got):\n%s", tc.path, tc.from, diff)
			}
		})
	}
	if len(ts.logs.records("http handler panic")) == 0 {
		t.Error("panic not logged")
	}
	for _, r := range ts.logs.records("http request") {
		if strings.Contains(fmt.Sprint(r), "s3cret") {
			t.Errorf("access log holds a token: %v", r)
		}
	}
}

// TestScriptHeaders: every script, GET or HEAD, short or longer than
// net/http holds whole, is sent with its length (never chunked), as text,
// and not to be stored.
func TestScriptHeaders(t *testing.T) {
	ts := startServer(t)
	tests := map[string]struct {
		method, mac string
		minLen      int64
	}{
		"short":      {method: "GET", mac: macLocal},
		"long":       {method: "GET", mac: macLarge, minLen: heldWhole + 1},
		"short HEAD": {method: "HEAD", mac: macLocal},
		"long HEAD":  {method: "HEAD", mac: macLarge, minLen: heldWhole + 1},
		"chain":      {method: "GET", mac: "boot.ipxe"},
	}
	type headers struct {
		ContentType, CacheControl string
		TransferEncoding          []string
	}
	want := headers{ContentType: "text/plain; charset=utf-8", CacheControl: "no-store"}
	c := clientFrom("127.0.0.1")
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// The length a HEAD answer gives is the GET's body's.
			get, err := c.Get(ts.url + "/ipxe/" + tc.mac)
			must(t, err)
			body, _ := io.ReadAll(get.Body)
			get.Body.Close()
			req, err := nethttp.NewRequest(tc.method, ts.url+"/ipxe/"+tc.mac, nil)
			must(t, err)
			before := time.Now().Truncate(time.Second)
			resp, err := c.Do(req)
			must(t, err)
			resp.Body.Close()
			after := time.Now()
			if date, err := nethttp.ParseTime(resp.Header.Get("Date")); err != nil || date.Before(before) || date.After(after) {
				t.Errorf("Date %q (%v), want between %v and %v", resp.Header.Get("Date"), err, before, after)
			}
			if resp.StatusCode != 200 || int64(len(body)) < tc.minLen {
				t.Fatalf("HTTP %d, %d bytes; want 200, at least %d", resp.StatusCode, len(body), tc.minLen)
			}
			if resp.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
			}
			got := headers{resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"), resp.TransferEncoding}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("headers (-want +got):\n%s", d)
			}
		})
	}
}

// TestDateCache: the Date of a second is formatted once, and as net/http
// formats it.
func TestDateCache(t *testing.T) {
	var c dateCache
	t0 := time.Date(2026, 12, 7, 0, 30, 15, 0, time.FixedZone("CET", 3600))
	steps := []struct {
		at   time.Time
		want string
		same bool // the value the step before returned
	}{
		{at: t0, want: "Sun, 06 Dec 2026 23:30:15 GMT"},
		{at: t0.Add(999 * time.Millisecond), want: "Sun, 06 Dec 2026 23:30:15 GMT", same: true},
		{at: t0.Add(time.Second), want: "Sun, 06 Dec 2026 23:30:16 GMT"},
		{at: t0, want: "Sun, 06 Dec 2026 23:30:15 GMT"},
	}
	var last []string
	for i, s := range steps {
		got := c.at(s.at)
		if len(got) != 1 || got[0] != s.want || got[0] != s.at.UTC().Format(nethttp.TimeFormat) {
			t.Errorf("step %d: %q, want [%q]", i, got, s.want)
		}
		if same := last != nil && &got[0] == &last[0]; same != s.same {
			t.Errorf("step %d: the same value as before: %v, want %v", i, same, s.same)
		}
		last = got
	}
}

// TestOneTimeScript: a script for an agent task carries the task's secret
// on the kernel line, after anything the intent's cmdline said; once the
// agent started, the script is refused, even to the machine's own leased
// address, and the refusal is reported as a security matter.
func TestOneTimeScript(t *testing.T) {
	ts := startServer(t)
	got, _ := get(t, clientFrom("127.0.0.1"), ts.url+"/ipxe/"+macAgent, nil)
	want := "#!ipxe\necho metal: " + macAgent + " install\nkernel /k quiet metal.token=forged metal.token=" + taskSecret + "\nboot\n"
	if diff := cmp.Diff(response{200, want}, got); diff != "" {
		t.Errorf("script with a task (-want +got):\n%s", diff)
	}
	got, _ = get(t, clientFrom("127.0.0.1"), ts.url+"/ipxe/"+macSpent, nil)
	if got.Status != 403 || strings.Contains(got.Body, taskSecret) {
		t.Errorf("spent script: %+v, want 403 without the secret", got)
	}
	select {
	case a := <-ts.alarms:
		if !strings.HasPrefix(a, macSpent+" 127.0.0.1: ") || !strings.Contains(a, "replay") {
			t.Errorf("security report %q", a)
		}
	default:
		t.Error("a replayed script was not reported")
	}
	for _, r := range ts.logs.records("http request") {
		if strings.Contains(fmt.Sprint(r), taskSecret) {
			t.Errorf("access log holds the secret: %v", r)
		}
	}
}

// TestScriptAccessLog: a served script is logged at debug (the daemon's
// boot timeline has it; at info the line cost more than the script), a
// refused one at info, both naming the MAC.
func TestScriptAccessLog(t *testing.T) {
	type line struct{ Path, Level, MAC string }
	tests := map[string]struct {
		level slog.Level
		want  []line
	}{
		"info": {level: slog.LevelInfo, want: []line{
			{"/ipxe/" + macOther, "INFO", macOther},
		}},
		"debug": {level: slog.LevelDebug, want: []line{
			{"/ipxe/boot.ipxe", "DEBUG", ""},
			{"/ipxe/" + macLocal, "DEBUG", macLocal},
			{"/ipxe/" + macOther, "INFO", macOther},
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ts := startServerAt(t, tc.level)
			c := clientFrom("127.0.0.1")
			for _, p := range []string{"/ipxe/boot.ipxe", "/ipxe/" + macLocal, "/ipxe/" + macOther} {
				get(t, c, ts.url+p, nil)
			}
			var got []line
			for _, r := range ts.logs.records("http request") {
				mac, _ := r["mac"].(string)
				got = append(got, line{fmt.Sprint(r["path"]), fmt.Sprint(r["level"]), mac})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("access log (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	ts := startServer(t)
	c := clientFrom("127.0.0.1")
	undionly, err := os.ReadFile(filepath.Join(bootfiles.DefaultDir, bootfiles.BIOS))
	must(t, err)
	kernel, err := os.ReadFile(filepath.Join(ts.files, "sub", "kernel"))
	must(t, err)

	tests := map[string]struct {
		path   string
		hdr    map[string]string
		status int
		body   []byte
	}{
		"ipxe binary":           {path: "/boot/undionly.kpxe", status: 200, body: undionly},
		"not an ipxe binary":    {path: "/boot/ipxe.lkrn", status: 404},
		"file":                  {path: "/files/sub/kernel", status: 200, body: kernel},
		"range":                 {path: "/files/sub/kernel", hdr: map[string]string{"Range": "bytes=10-19"}, status: 206, body: kernel[10:20]},
		"suffix range":          {path: "/files/sub/kernel", hdr: map[string]string{"Range": "bytes=-5"}, status: 206, body: kernel[len(kernel)-5:]},
		"unsatisfiable range":   {path: "/files/sub/kernel", hdr: map[string]string{"Range": "bytes=999999-"}, status: 416},
		"not modified":          {path: "/files/sub/kernel", hdr: map[string]string{"If-Modified-Since": time.Now().Add(time.Hour).UTC().Format(nethttp.TimeFormat)}, status: 304},
		"symlink out":           {path: "/files/escape", status: 403},
		"encoded traversal":     {path: "/files/sub/%2e%2e/%2e%2e/secret", status: 403},
		"plain traversal":       {path: "/files/../secret", status: 307}, // the mux redirects to the cleaned /secret
		"encoded slash":         {path: "/files/..%2fsecret", status: 403},
		"backslash":             {path: "/files/..%5csecret", status: 403},
		"directory":             {path: "/files/sub", status: 404},
		"images not configured": {path: "/images/x", status: 404},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, _ := get(t, c, ts.url+tc.path, tc.hdr)
			if got.Status != tc.status {
				t.Fatalf("GET %s: status %d, want %d (%q)", tc.path, got.Status, tc.status, got.Body)
			}
			if tc.body != nil && got.Body != string(tc.body) {
				t.Errorf("GET %s: %d bytes, want %d", tc.path, len(got.Body), len(tc.body))
			}
			if got.Body == "secret" {
				t.Errorf("GET %s leaked the secret", tc.path)
			}
		})
	}

	t.Run("etag", func(t *testing.T) {
		_, hdr := get(t, c, ts.url+"/files/sub/kernel", nil)
		got, _ := get(t, c, ts.url+"/files/sub/kernel", map[string]string{"If-None-Match": hdr.Get("ETag")})
		if got.Status != 304 {
			t.Errorf("If-None-Match with the ETag: status %d, want 304", got.Status)
		}
	})

	t.Run("access log", func(t *testing.T) {
		var rec map[string]any
		for _, r := range ts.logs.records("http request") {
			if r["path"] == "/files/sub/kernel" && r["status"] == float64(200) {
				rec = r
			}
		}
		if rec == nil {
			t.Fatalf("no access log line for /files/sub/kernel")
		}
		if rec["bytes"] != float64(len(kernel)) || rec["method"] != "GET" || !strings.HasPrefix(fmt.Sprint(rec["client"]), "127.0.0.1:") || rec["duration"] == nil {
			t.Errorf("access log line %v", rec)
		}
	})
}

// TestCurlRange fetches with a real client: a range, a resumed download,
// and the whole iPXE binary byte for byte.
func TestCurlRange(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not found: install the Debian package curl")
	}
	ts := startServer(t)
	kernel, err := os.ReadFile(filepath.Join(ts.files, "sub", "kernel"))
	must(t, err)
	dir := t.TempDir()

	out, err := exec.Command("curl", "-sS", "-f", "-r", "100-199", ts.url+"/files/sub/kernel").Output()
	if err != nil || !bytes.Equal(out, kernel[100:200]) {
		t.Fatalf("curl -r 100-199: %v, %q", err, out)
	}

	partial := filepath.Join(dir, "partial")
	must(t, os.WriteFile(partial, kernel[:4000], 0o644))
	if b, err := exec.Command("curl", "-sS", "-f", "-C", "-", "-o", partial, ts.url+"/files/sub/kernel").CombinedOutput(); err != nil {
		t.Fatalf("curl -C -: %v\n%s", err, b)
	}
	if got, _ := os.ReadFile(partial); !bytes.Equal(got, kernel) {
		t.Fatalf("resumed download differs: %d bytes", len(got))
	}

	u, _ := url.JoinPath(ts.url, "boot", bootfiles.UEFI)
	whole := filepath.Join(dir, "ipxe.efi")
	if b, err := exec.Command("curl", "-sS", "-f", "-o", whole, u).CombinedOutput(); err != nil {
		t.Fatalf("curl %s: %v\n%s", u, err, b)
	}
	want, _ := os.ReadFile(filepath.Join(bootfiles.DefaultDir, bootfiles.UEFI))
	if got, _ := os.ReadFile(whole); !bytes.Equal(got, want) {
		t.Fatal("ipxe.efi over HTTP differs from the file")
	}

	// --path-as-is sends "../" as typed; the server must not follow it.
	code, err := exec.Command("curl", "-sS", "--path-as-is", "-o", filepath.Join(dir, "trav"), "-w", "%{http_code}", ts.url+"/files/../secret").Output()
	if got, _ := os.ReadFile(filepath.Join(dir, "trav")); err != nil || string(code) == "200" || string(got) == "secret" {
		t.Fatalf("traversal with curl: status %s, err %v, body %q", code, err, got)
	}
}

// TestLargeFileSendfile serves an image to curl, whole and as a range,
// and checks the bytes left this process by sendfile(2): the kernel counts
// each read-like system call in /proc/self/io's syscr, and a copy through
// a buffer (a wrapper around the ResponseWriter that hides io.ReaderFrom)
// takes one read per 32 KiB, about a thousand for this file, where
// sendfile takes one call per socket buffer filled.
func TestLargeFileSendfile(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not found: install the Debian package curl")
	}
	if _, err := readSyscr(); err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	const size = 32 << 20
	ts := startServer(t)
	data := bytes.Repeat([]byte("metal image "), size/12+1)[:size]
	must(t, os.WriteFile(filepath.Join(ts.files, "image.raw"), data, 0o644))
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		args []string
		want []byte
	}{
		"whole": {want: data},
		"range": {args: []string{"-r", "1000-30000999"}, want: data[1000:30001000]},
	} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(dir, name)
			before, err := readSyscr()
			must(t, err)
			args := append([]string{"-sS", "-f", "-o", out}, tc.args...)
			if b, err := exec.Command("curl", append(args, ts.url+"/files/image.raw")...).CombinedOutput(); err != nil {
				t.Fatalf("curl: %v\n%s", err, b)
			}
			after, err := readSyscr()
			must(t, err)
			if got, _ := os.ReadFile(out); !bytes.Equal(got, tc.want) {
				t.Fatalf("got %d bytes, want %d", len(got), len(tc.want))
			}
			if calls := after - before; calls > 200 {
				t.Errorf("%d read-like system calls for %d bytes: the file was copied through a buffer, not sent with sendfile", calls, len(tc.want))
			}
		})
	}
}

// readSyscr is this process's count of read-like system calls so far.
func readSyscr() (int64, error) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("no syscr in /proc/self/io")
}
