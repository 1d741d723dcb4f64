package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/pxe/bootfiles"
)

// logBuffer collects JSON log lines from the server under test.
type logBuffer struct{ syncbuf.Buffer }

// records returns the log lines with msg, as maps.
func (l *logBuffer) records(msg string) []map[string]any {
	return l.Records(func(m map[string]any) bool { return m["msg"] == msg })
}

// waitRecord waits for a log line with msg whose "file" is file: transfers
// log after the client has its last packet.
func (l *logBuffer) waitRecord(t *testing.T, msg, file string) map[string]any {
	t.Helper()
	return l.waitRecordWithin(t, msg, file, 5*time.Second)
}

// waitRecordWithin is waitRecord for transfers that may end later: a
// server giving up on a client after its retries.
func (l *logBuffer) waitRecordWithin(t *testing.T, msg, file string, d time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, r := range l.records(msg) {
			if r["file"] == file {
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %q log line for file %q; log:\n%s", msg, file, l.String())
	return nil
}

// waitServing waits for the server's "tftp serving" line: from then on
// both its sockets are bound and requests with windowsize reach the
// windowed sender. Before it, a request can reach pin/tftp only, which
// answers without windowsize.
func (l *logBuffer) waitServing(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(l.records("tftp serving")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server never logged tftp serving; log:\n%s", l.String())
		}
		time.Sleep(time.Millisecond)
	}
}

type testServer struct {
	addr   *net.UDPAddr
	logs   *logBuffer
	srv    *Server
	root   string // per-machine root
	secret string // a file beside the root, never to be served
}

// startServer runs a server on 127.0.0.1 with Debian's iPXE binaries and a
// root holding a per-machine file and links that try to leave it.
func startServer(t testing.TB, mod func(*Config), before ...func(*testServer)) *testServer {
	t.Helper()
	return startServerOn(t, "127.0.0.1:0", mod, before...)
}

// startServerOn is startServer on addr, an IPv4 or IPv6 one.
func startServerOn(t testing.TB, addr string, mod func(*Config), before ...func(*testServer)) *testServer {
	t.Helper()
	ipxe, err := bootfiles.FindIPXE(bootfiles.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	ts := &testServer{logs: &logBuffer{}, root: filepath.Join(base, "root"), secret: filepath.Join(base, "secret")}
	mustT(t, os.MkdirAll(filepath.Join(ts.root, "machines", "52-54-00-00-00-01"), 0o755))
	mustT(t, os.WriteFile(ts.secret, []byte("secret outside the root\n"), 0o644))
	mustT(t, os.WriteFile(filepath.Join(ts.root, "machines", "52-54-00-00-00-01", "boot.cfg"), []byte("per-machine\n"), 0o644))
	mustT(t, os.Symlink("../secret", filepath.Join(ts.root, "escape")))
	mustT(t, os.Symlink("..", filepath.Join(ts.root, "up")))
	root, err := bootfiles.OpenRoot(ts.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })

	cfg := Config{
		IPXE:    ipxe,
		Root:    root,
		Timeout: time.Second,
		Logger:  slog.New(slog.NewJSONHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	ts.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Changes to the server happen before it serves, not racing its
	// handlers.
	for _, f := range before {
		f(ts)
	}
	network := "udp4"
	if strings.HasPrefix(addr, "[") {
		network = "udp6"
	}
	conn, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = conn.LocalAddr().(*net.UDPAddr)
	serveUntilCleanup(t, ts.logs, func(ctx context.Context) error { return ts.srv.ServeConn(ctx, conn) })
	return ts
}

// serveUntilCleanup runs serve until the test ends, then checks it
// stopped cleanly and prints the server's log if the test failed. It
// returns once the server says it is serving.
func serveUntilCleanup(t testing.TB, logs *logBuffer, serve func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	logs.waitServing(t)
}

func mustT(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// needTool fails (never skips) when a client the test drives is missing.
func needTool(t testing.TB, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("%s not found: install the Debian package %s", tool, pkg)
	}
}

// clients are the real TFTP clients the server must work with. tftp-hpa's
// client cannot ask for blksize, so it gets 512.
type client struct {
	tool, pkg string
	blksize   string // what the server should agree to, "" for none
	window    string // the windowsize it should agree to, "" for none
	get       func(addr *net.UDPAddr, remote, local string) *exec.Cmd
	put       func(addr *net.UDPAddr, local, remote string) *exec.Cmd
}

var clients = map[string]client{
	"tftp-hpa": {
		tool: "tftp", pkg: "tftp-hpa",
		get: func(a *net.UDPAddr, remote, local string) *exec.Cmd {
			return exec.Command("tftp", "-m", "binary", a.IP.String(), fmt.Sprint(a.Port), "-c", "get", remote, local)
		},
		put: func(a *net.UDPAddr, local, remote string) *exec.Cmd {
			return exec.Command("tftp", "-m", "binary", a.IP.String(), fmt.Sprint(a.Port), "-c", "put", local, remote)
		},
	},
	"atftp": {
		tool: "atftp", pkg: "atftp", blksize: "1468",
		get: func(a *net.UDPAddr, remote, local string) *exec.Cmd {
			return exec.Command("atftp", "--option", "blksize 1468", "--option", "tsize", "-g", "-r", remote, "-l", local, a.IP.String(), fmt.Sprint(a.Port))
		},
		put: func(a *net.UDPAddr, local, remote string) *exec.Cmd {
			return exec.Command("atftp", "-p", "-l", local, "-r", remote, a.IP.String(), fmt.Sprint(a.Port))
		},
	},
	// atftp asking for windowsize: metal's windowed sender answers it.
	"atftp windowsize": {
		tool: "atftp", pkg: "atftp", blksize: "1468", window: "8",
		get: func(a *net.UDPAddr, remote, local string) *exec.Cmd {
			return atftpGet(a, remote, local, 1468, 8)
		},
		put: func(a *net.UDPAddr, local, remote string) *exec.Cmd {
			return exec.Command("atftp", "--option", "windowsize 8", "-p", "-l", local, "-r", remote, a.IP.String(), fmt.Sprint(a.Port))
		},
	},
	"curl": {
		tool: "curl", pkg: "curl", blksize: "1468",
		get: func(a *net.UDPAddr, remote, local string) *exec.Cmd {
			// --path-as-is: curl would otherwise squash "../" itself and
			// the server would never see the attempt.
			return exec.Command("curl", "-sS", "--path-as-is", "--tftp-blksize", "1468", "-o", local, "tftp://"+a.String()+"/"+remote)
		},
		put: func(a *net.UDPAddr, local, remote string) *exec.Cmd {
			return exec.Command("curl", "-sS", "-T", local, "tftp://"+a.String()+"/"+remote)
		},
	},
}

func TestClientsFetchIPXE(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(bootfiles.DefaultDir, bootfiles.BIOS))
	if err != nil {
		t.Fatalf("%v (install the Debian package ipxe)", err)
	}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			needTool(t, c.tool, c.pkg)
			ts := startServer(t, nil)
			out := filepath.Join(t.TempDir(), "out")
			if b, err := c.get(ts.addr, bootfiles.BIOS, out).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", c.tool, err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s fetched %d bytes, not byte-identical to %d bytes of %s", c.tool, len(got), len(want), bootfiles.BIOS)
			}
			rec := ts.logs.waitRecord(t, "tftp transfer", bootfiles.BIOS)
			if diff := cmp.Diff(map[string]any{"result": "ok", "bytes": float64(len(want))},
				map[string]any{"result": rec["result"], "bytes": rec["bytes"]}); diff != "" {
				t.Errorf("transfer log (-want +got):\n%s", diff)
			}
			if rec["client"] == "" || rec["duration"] == nil {
				t.Errorf("transfer log lacks client or duration: %v", rec)
			}
			opts := ts.logs.waitRecord(t, "tftp transfer options", bootfiles.BIOS)
			if got := opts["blksize"]; c.blksize != "" && got != c.blksize {
				t.Errorf("negotiated blksize %v, want %s", got, c.blksize)
			}
			if got := opts["windowsize"]; got != nil && got != c.window || got == nil && c.window != "" {
				t.Errorf("negotiated windowsize %v, want %q", got, c.window)
			}
		})
	}
}

func TestClientsRefused(t *testing.T) {
	names := map[string]struct {
		remote, reason string
	}{
		"traversal": {remote: "../../etc/passwd", reason: "parent directory"},
		// A leading slash is the root's (as tftpd -s): /etc/passwd is
		// looked for there; a second one is an absolute path.
		"rooted":       {remote: "/etc/passwd", reason: "no such file"},
		"absolute":     {remote: "//etc/passwd", reason: "absolute"},
		"symlink out":  {remote: "escape", reason: "escapes"},
		"link to ..":   {remote: "up/secret", reason: "escapes"},
		"backslash":    {remote: `..\..\etc\passwd`, reason: "backslash"},
		"missing file": {remote: "no-such-file", reason: "no such file"},
	}
	for cname, c := range clients {
		t.Run(cname, func(t *testing.T) {
			t.Parallel()
			needTool(t, c.tool, c.pkg)
			ts := startServer(t, nil)
			for name, tc := range names {
				t.Run(name, func(t *testing.T) {
					out := filepath.Join(t.TempDir(), "out")
					b, _ := c.get(ts.addr, tc.remote, out).CombinedOutput()
					got, _ := os.ReadFile(out)
					if len(got) > 0 {
						t.Fatalf("%s got %d bytes for %q: %q", c.tool, len(got), tc.remote, got)
					}
					rec := ts.logs.waitRecord(t, "tftp transfer", tc.remote)
					if rec["result"] == "ok" || !strings.Contains(fmt.Sprint(rec["reason"]), tc.reason) {
						t.Errorf("log %v, want a refusal with reason containing %q (client said %s)", rec, tc.reason, b)
					}
				})
			}
		})
	}
}

func TestClientsWriteRefused(t *testing.T) {
	for cname, c := range clients {
		t.Run(cname, func(t *testing.T) {
			t.Parallel()
			needTool(t, c.tool, c.pkg)
			ts := startServer(t, nil)
			local := filepath.Join(t.TempDir(), "upload")
			mustT(t, os.WriteFile(local, []byte("upload"), 0o644))
			b, err := c.put(ts.addr, local, "uploaded").CombinedOutput()
			if _, serr := os.Stat(filepath.Join(ts.root, "uploaded")); serr == nil {
				t.Fatalf("%s wrote a file into the root", c.tool)
			}
			rec := ts.logs.waitRecord(t, "tftp transfer", "uploaded")
			if rec["result"] != "refused" {
				t.Errorf("log %v, want refused (client: err %v, %s)", rec, err, b)
			}
		})
	}
}

// rrq builds a raw read request, for names and options no client sends.
func rrq(name string, opts ...string) []byte {
	p := []byte{0, 1}
	p = append(p, name...)
	p = append(p, 0)
	p = append(p, "octet"...)
	p = append(p, 0)
	for _, o := range opts {
		p = append(p, o...)
		p = append(p, 0)
	}
	return p
}

// exchange sends one packet and returns the first reply.
func exchange(t *testing.T, addr *net.UDPAddr, pkt []byte) []byte {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDP(pkt, addr); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	reply := buf[:n]
	// Let the server's transfer end cleanly instead of waiting for
	// retransmits: answer an OACK or DATA with an error packet.
	if op := binary.BigEndian.Uint16(reply); op == 6 || op == 3 {
		c.WriteToUDP([]byte{0, 5, 0, 0, 'd', 'o', 'n', 'e', 0}, from)
	}
	return reply
}

func parseOACK(p []byte) map[string]string {
	m := map[string]string{}
	f := bytes.Split(bytes.TrimSuffix(p[2:], []byte{0}), []byte{0})
	for i := 0; i+1 < len(f); i += 2 {
		m[string(f[i])] = string(f[i+1])
	}
	return m
}

func TestRawRequests(t *testing.T) {
	fi, err := os.Stat(filepath.Join(bootfiles.DefaultDir, bootfiles.BIOS))
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, nil)
	tests := map[string]struct {
		pkt      []byte
		wantOp   uint16
		wantOACK map[string]string
	}{
		"control byte":      {pkt: rrq("undionly\x01kpxe"), wantOp: 5},
		"over-long name":    {pkt: rrq(strings.Repeat("a/", 200) + "x"), wantOp: 5},
		"newline":           {pkt: rrq("machines\n/etc/passwd"), wantOp: 5},
		"per-machine file":  {pkt: rrq("machines/52-54-00-00-00-01/boot.cfg"), wantOp: 3},
		"directory":         {pkt: rrq("machines"), wantOp: 5},
		"tsize and blksize": {pkt: rrq(bootfiles.BIOS, "tsize", "0", "blksize", "1468"), wantOp: 6, wantOACK: map[string]string{"tsize": fmt.Sprint(fi.Size()), "blksize": "1468"}},
		// pin/tftp v3.1.0 negotiates blksize and tsize only: a request
		// with windowsize (RFC 7440) goes to metal's windowed sender, which
		// also takes timeout (RFC 2349); option names in any case.
		"windowsize and timeout": {pkt: rrq(bootfiles.BIOS, "windowsize", "8", "timeout", "3", "blksize", "1024"), wantOp: 6, wantOACK: map[string]string{"windowsize": "8", "timeout": "3", "blksize": "1024"}},
		"windowsize capped":      {pkt: rrq(bootfiles.BIOS, "WindowSize", "1000", "tsize", "0"), wantOp: 6, wantOACK: map[string]string{"windowsize": "64", "tsize": fmt.Sprint(fi.Size())}},
		"windowsize refused":     {pkt: rrq("../secret", "windowsize", "8"), wantOp: 5},
		"windowsize not found":   {pkt: rrq("no-such-file", "windowsize", "8"), wantOp: 5},
		"timeout out of range":   {pkt: rrq(bootfiles.BIOS, "windowsize", "4", "timeout", "0", "blksize", "100000"), wantOp: 6, wantOACK: map[string]string{"windowsize": "4"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			reply := exchange(t, ts.addr, tc.pkt)
			// pin/tftp caps blksize by the MTU of the interface a request
			// came in on, and falls back to 512 when looking the interface
			// up fails, which it does while other programs (parallel tests
			// making veth pairs) add or remove interfaces. Ask again then:
			// the answer this test wants must come, just not always first.
			for try := 1; try < 5 && tc.wantOACK != nil && parseOACK(reply)["blksize"] == "512" && tc.wantOACK["blksize"] != "512"; try++ {
				t.Logf("blksize 512 in try %d (interface lookup raced with interface changes); asking again", try)
				reply = exchange(t, ts.addr, tc.pkt)
			}
			if op := binary.BigEndian.Uint16(reply); op != tc.wantOp {
				t.Fatalf("reply opcode %d (%q), want %d", op, reply, tc.wantOp)
			}
			if tc.wantOACK != nil {
				if diff := cmp.Diff(tc.wantOACK, parseOACK(reply)); diff != "" {
					t.Errorf("OACK (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestHandlerPanicRecovered(t *testing.T) {
	ts := startServer(t, nil, func(ts *testServer) {
		real := ts.srv.open
		ts.srv.open = func(client netip.Addr, name string) (*os.File, fs.FileInfo, error) {
			if name == "boom" {
				panic("boom")
			}
			return real(client, name)
		}
	})
	reply := exchange(t, ts.addr, rrq("boom"))
	if op := binary.BigEndian.Uint16(reply); op != 5 || !bytes.Contains(reply, []byte("internal")) {
		t.Fatalf("reply %q, want an internal-error packet", reply)
	}
	if rec := ts.logs.waitRecord(t, "tftp handler panic", "boom"); rec["stack"] == "" {
		t.Errorf("panic log without stack: %v", rec)
	}
	// The server is still up.
	if op := binary.BigEndian.Uint16(exchange(t, ts.addr, rrq(bootfiles.BIOS))); op != 3 {
		t.Fatalf("after a panic, reply opcode %d, want DATA", op)
	}
}

func TestNewNeedsSomethingToServe(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New with nothing to serve succeeded")
	}
}

// TestBlockReader: the library seeks for tsize before reading; reads in
// block sizes afterwards must give the file from where the seeks left it.
func TestBlockReader(t *testing.T) {
	data := make([]byte, 200<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		readFirst int   // bytes read before the seeks
		seekTo    int64 // absolute offset of the final seek
	}{
		"tsize probe first":    {readFirst: 0, seekTo: 0},
		"seek after a read":    {readFirst: 1468, seekTo: 1468},
		"seek back to start":   {readFirst: 5000, seekTo: 0},
		"seek past the buffer": {readFirst: 10, seekTo: 100 << 10},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r := newBlockReader(f)
			if _, err := io.ReadFull(r, make([]byte, tc.readFirst)); err != nil {
				t.Fatal(err)
			}
			pos, err := r.Seek(0, io.SeekCurrent)
			if err != nil || pos != int64(tc.readFirst) {
				t.Fatalf("Seek(0, current) = %d, %v; want %d", pos, err, tc.readFirst)
			}
			if size, err := r.Seek(0, io.SeekEnd); err != nil || size != int64(len(data)) {
				t.Fatalf("Seek(0, end) = %d, %v; want %d", size, err, len(data))
			}
			if _, err := r.Seek(tc.seekTo, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			var got []byte
			block := make([]byte, 1468)
			for {
				n, err := io.ReadFull(r, block)
				got = append(got, block[:n]...)
				if err != nil {
					break
				}
			}
			if !bytes.Equal(got, data[tc.seekTo:]) {
				t.Errorf("read %d bytes after the seeks, want the %d from offset %d", len(got), len(data)-int(tc.seekTo), tc.seekTo)
			}
		})
	}
}

// clientConfigs generates grub/grub.cfg naming the client that asks, as
// a machine's GRUB config depends on who asks.
type clientConfigs struct{}

func (clientConfigs) Generate(_ context.Context, client netip.Addr, name string) ([]byte, error) {
	if name != "grub/grub.cfg" {
		return nil, fs.ErrNotExist
	}
	return []byte("for " + client.String() + "\n"), nil
}

// TestMountsAndGenerated: GRUB's absolute paths reach a mount (as
// metal's HTTP serves /files/), and a generated file is made for the
// client asking, by every client and sender.
func TestMountsAndGenerated(t *testing.T) {
	for cname, c := range clients {
		t.Run(cname, func(t *testing.T) {
			t.Parallel()
			needTool(t, c.tool, c.pkg)
			files := t.TempDir()
			kernel := bytes.Repeat([]byte("kernel "), 3000)
			mustT(t, os.WriteFile(filepath.Join(files, "vmlinuz"), kernel, 0o644))
			root, err := bootfiles.OpenRoot(files)
			mustT(t, err)
			t.Cleanup(func() { root.Close() })
			ts := startServer(t, func(cfg *Config) {
				cfg.Mounts = map[string]*bootfiles.Root{"files": root}
				cfg.Generated = clientConfigs{}
			})
			for remote, want := range map[string][]byte{
				"/files/vmlinuz":                      kernel,
				"/grub/grub.cfg":                      []byte("for 127.0.0.1\n"),
				"machines/52-54-00-00-00-01/boot.cfg": []byte("per-machine\n"),
			} {
				out := filepath.Join(t.TempDir(), "out")
				if b, err := c.get(ts.addr, remote, out).CombinedOutput(); err != nil {
					t.Fatalf("%s get %s: %v: %s", c.tool, remote, err, b)
				}
				got, _ := os.ReadFile(out)
				if !bytes.Equal(got, want) {
					t.Errorf("%s: %d bytes, want %d", remote, len(got), len(want))
				}
			}
		})
	}
}

// TestServeIPv4AndIPv6 is Serve on an address without a host: one port,
// answered on IPv4 and on IPv6 (UEFI's PXE over IPv6 fetches its boot
// program by TFTP), by real clients over each.
func TestServeIPv4AndIPv6(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(bootfiles.DefaultDir, bootfiles.UEFI))
	if err != nil {
		t.Fatalf("%v (install the Debian package ipxe)", err)
	}
	ipxe, err := bootfiles.FindIPXE(bootfiles.DefaultDir)
	mustT(t, err)
	logs := &logBuffer{}
	srv, err := New(Config{Addr: ":0", IPXE: ipxe, Timeout: time.Second,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	mustT(t, err)
	serveUntilCleanup(t, logs, srv.Serve)
	var port string
	deadline := time.Now().Add(5 * time.Second)
	for port == "" || len(logs.records("tftp serving")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not log serving on two sockets:\n%s", logs.String())
		}
		for _, r := range logs.records("tftp serving") {
			if a, err := netip.ParseAddrPort(r["addr"].(string)); err == nil {
				port = strconv.Itoa(int(a.Port()))
			}
		}
		time.Sleep(time.Millisecond)
	}
	for name, c := range map[string]client{"curl": clients["curl"], "atftp": clients["atftp"]} {
		for _, host := range []string{"127.0.0.1", "::1"} {
			t.Run(name+" "+host, func(t *testing.T) {
				needTool(t, c.tool, c.pkg)
				addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, port))
				mustT(t, err)
				out := filepath.Join(t.TempDir(), "out")
				if b, err := c.get(addr, bootfiles.UEFI, out).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", c.tool, err, b)
				}
				got, err := os.ReadFile(out)
				mustT(t, err)
				if !bytes.Equal(got, want) {
					t.Fatalf("%s fetched %d bytes over %s, not byte-identical to %d bytes of %s", c.tool, len(got), host, len(want), bootfiles.UEFI)
				}
			})
		}
	}
}
