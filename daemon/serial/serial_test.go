package serial_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
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

// stuckOpener opens "stuck" as a BMC whose serial-over-LAN never starts
// does: it blocks until release is closed, then fails; other machines'
// consoles are real sockets.
type stuckOpener struct {
	serial.UnixSockets
	entered chan struct{} // closed when the stuck open began
	release chan struct{}
	opens   atomic.Int32
}

var errStuck = errors.New("SOL activation timed out")

func (o *stuckOpener) OpenSerial(ctx context.Context, machine string) (io.ReadWriteCloser, error) {
	if machine != "stuck" {
		return o.UnixSockets.OpenSerial(ctx, machine)
	}
	if o.opens.Add(1) == 1 {
		close(o.entered)
	}
	<-o.release
	return nil, errStuck
}

// TestHubSlowOpen: a console that is slow to open holds up only its own
// machine's sessions: another machine's console attaches meanwhile, and
// both sessions on the slow one wait for it and get its error.
func TestHubSlowOpen(t *testing.T) {
	dir := t.TempDir()
	serialtest.Serve(t, dir, "m1", `echo booted; exec cat`)
	o := &stuckOpener{UnixSockets: serial.UnixSockets(dir + "/{machine}.sock"), entered: make(chan struct{}), release: make(chan struct{})}
	hub := serial.NewHub(o)
	ctx := context.Background()

	errs := make(chan error, 2)
	go func() { _, err := hub.Attach(ctx, "stuck"); errs <- err }()
	<-o.entered
	go func() { _, err := hub.Attach(ctx, "stuck"); errs <- err }()

	type attached struct {
		s   *serial.Session
		err error
	}
	m1 := make(chan attached, 1)
	go func() { s, err := hub.Attach(ctx, "m1"); m1 <- attached{s, err} }()
	var s *serial.Session
	select {
	case a := <-m1:
		if a.err != nil {
			t.Fatal(a.err)
		}
		s = a.s
	case <-time.After(30 * time.Second):
		close(o.release)
		t.Fatal("m1's console waited for the stuck console's open")
	}
	readUntil(t, s, "booted")
	s.Close()
	select {
	case err := <-errs:
		t.Fatalf("an Attach of the stuck console returned before its open did: %v", err)
	default:
	}

	close(o.release)
	for range 2 {
		if err := <-errs; !errors.Is(err, errStuck) {
			t.Errorf("Attach(stuck) = %v, want %v", err, errStuck)
		}
	}
}
