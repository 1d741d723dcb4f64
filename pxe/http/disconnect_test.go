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

	"github.com/metal-dev/metal/pxe/bootfiles"
)

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
