package http

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/pxe/bootfiles"
)

func TestSendBufferFor(t *testing.T) {
	for name, tc := range map[string]struct {
		wmemMax, tcpWmemMax, want int
	}{
		// Debian's defaults: a fixed buffer would be capped at 416 KiB
		// where autotuning reaches 4 MiB.
		"stock kernel":           {wmemMax: 212992, tcpWmemMax: 4 << 20, want: 0},
		"wmem_max raised":        {wmemMax: 4 << 20, tcpWmemMax: 4 << 20, want: 4 << 20},
		"just autotuning's ceil": {wmemMax: 2 << 20, tcpWmemMax: 4 << 20, want: 2 << 20},
		"autotuning goes higher": {wmemMax: 4 << 20, tcpWmemMax: 16 << 20, want: 0},
		"huge wmem_max":          {wmemMax: 1 << 30, tcpWmemMax: 4 << 20, want: maxSendBuffer},
		"unreadable":             {wmemMax: 0, tcpWmemMax: 4 << 20, want: 0},
	} {
		t.Run(name, func(t *testing.T) {
			if got := sendBufferFor(tc.wmemMax, tc.tcpWmemMax); got != tc.want {
				t.Errorf("sendBufferFor(%d, %d) = %d, want %d", tc.wmemMax, tc.tcpWmemMax, got, tc.want)
			}
		})
	}
}

// TestListenerSendBuffer: the listener carries the send buffer its
// connections inherit, where the host allows one, and the kernel's
// default otherwise.
func TestListenerSendBuffer(t *testing.T) {
	ts := startServer(t)
	c := clientFrom("127.0.0.1")
	resp, err := c.Get(ts.url + "/files/sub/kernel") // ServeListener has set it up by now
	must(t, err)
	resp.Body.Close()
	got := ts.sndbuf(t)
	if want := hostSendBuffer(); want > 0 && got != 2*want {
		t.Errorf("listener SO_SNDBUF %d, want %d (twice %d, as the kernel keeps it)", got, 2*want, want)
	} else if want == 0 {
		t.Logf("host allows no send buffer above autotuning's: SO_SNDBUF stays %d", got)
	}
}

// TestDisconnectMidFile: a client that reads part of an image and hangs
// up ends its request on the server (the sendfile fails and the handler
// returns, counted short), whatever the send buffer holds.
func TestDisconnectMidFile(t *testing.T) {
	const size = 64 << 20
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "image.raw"), bytes.Repeat([]byte("metal image "), size/12+1)[:size], 0o644))
	root, err := bootfiles.OpenRoot(dir)
	must(t, err)
	t.Cleanup(func() { root.Close() })
	done := make(chan Request, 1)
	addr := serveConfig(t, Config{Policy: &policy{}, Files: root, Logger: slog.New(slog.DiscardHandler),
		Observe: func(r Request) { done <- r }})

	conn, err := net.Dial("tcp", addr)
	must(t, err)
	_, err = io.WriteString(conn, "GET /files/image.raw HTTP/1.1\r\nHost: metal\r\n\r\n")
	must(t, err)
	if _, err := io.ReadFull(conn, make([]byte, 1<<20)); err != nil {
		t.Fatalf("reading the first MiB: %v", err)
	}
	// A reset, not a polite close: the server's next send fails at once.
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
	select {
	case r := <-done:
		if r.Status != nethttp.StatusOK || r.Bytes >= size {
			t.Errorf("request ended with status %d after %d bytes, want 200 and fewer than %d", r.Status, r.Bytes, size)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server still sends the image 10 s after its client hung up")
	}
}

// sndbuf is the test server's listener's SO_SNDBUF.
func (ts *testServer) sndbuf(t *testing.T) int {
	t.Helper()
	ln := ts.listener.(*net.TCPListener)
	rc, err := ln.SyscallConn()
	must(t, err)
	var v int
	var gerr error
	must(t, rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) }))
	must(t, gerr)
	return v
}

// serveConfig serves a server of cfg on a loopback port until the test
// ends, and returns its address.
func serveConfig(t *testing.T, cfg Config) string {
	t.Helper()
	srv, err := New(cfg)
	must(t, err)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	return ln.Addr().String()
}
