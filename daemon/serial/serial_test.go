package serial_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/daemon/serial/serialtest"
)

// readUntil reads a session's output until it holds want.
func readUntil(t *testing.T, s *serial.Session, want string) string {
	t.Helper()
	var got bytes.Buffer
	timeout := time.After(10 * time.Second)
	for !bytes.Contains(got.Bytes(), []byte(want)) {
		select {
		case b, ok := <-s.Output():
			if !ok {
				t.Fatalf("output ended before %q; got %q", want, got.String())
			}
			got.Write(b)
		case <-timeout:
			t.Fatalf("no %q in 10 s; got %q", want, got.String())
		}
	}
	return got.String()
}

// TestHub: sessions on one machine share one stream: both see its output,
// a session joining late starts with what it printed, keys of either
// reach the machine, and the last to leave closes the stream (the next
// session opens a new one).
func TestHub(t *testing.T) {
	dir := t.TempDir()
	tty := serialtest.Serve(t, dir, "m1", `echo booted; exec cat`)
	hub := serial.NewHub(serial.UnixSockets(dir + "/{machine}.sock"))
	ctx := context.Background()

	a, err := hub.Attach(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, a, "booted")
	b, err := hub.Attach(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, b, "booted") // the scrollback
	if _, err := a.Write([]byte("from-a\r")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, b, "from-a\r\nfrom-a")
	a.Close()
	if _, err := b.Write([]byte("from-b\r")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, b, "from-b")
	b.Close()
	if in := tty.Input(); in != "from-a\rfrom-b\r" {
		t.Errorf("the machine got %q", in)
	}

	// A new stream, a new process: it boots again.
	c, err := hub.Attach(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if out := readUntil(t, c, "booted"); bytes.Contains([]byte(out), []byte("from-")) {
		t.Errorf("a new stream shows the old one's output: %q", out)
	}

	if _, err := hub.Attach(ctx, "m2"); !errors.Is(err, serial.ErrNoConsole) {
		t.Errorf("attach to a machine without a console socket: %v, want ErrNoConsole", err)
	}
	if _, err := hub.Attach(ctx, "../m1"); !errors.Is(err, serial.ErrNoConsole) {
		t.Errorf("attach to a path outside the pattern: %v, want ErrNoConsole", err)
	}
}
