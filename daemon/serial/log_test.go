package serial_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/daemon/serial/serialtest"
	"github.com/metal-dev/metal/internal/syncbuf"
)

// TestLogRotates: a console log never passes its bound; the rotated file
// keeps the lines before, and Tail reads across both, without control
// characters.
func TestLogRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "consoles", "m1.log")
	l, err := serial.OpenLog(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if _, err := fmt.Fprintf(l, "line %02d\x1b[0m\r\n", i); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	for _, p := range []string{path, path + ".1"} {
		if st, err := os.Stat(p); err != nil || st.Size() > 100 {
			t.Errorf("%s: %v, size over the bound", p, err)
		}
	}
	got, err := serial.Tail(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"line 27[0m", "line 28[0m", "line 29[0m"}, got); diff != "" {
		t.Errorf("tail (-want +got):\n%s", diff)
	}
	if got, err := serial.Tail(path+"-none", 3); got != nil || err != nil {
		t.Errorf("tail of no log: %q, %v", got, err)
	}
}

// TestKeep: a held console logs what the machine prints, a viewer shares
// the held stream, and a stream that ends is opened again.
func TestKeep(t *testing.T) {
	dir := t.TempDir()
	tty := serialtest.Serve(t, dir, "m1", `echo booted; exec cat`)
	hub := serial.NewHub(serial.UnixSockets(dir + "/{machine}.sock"))
	ctx := context.Background()
	logged := keep(t, hub, "m1")
	waitFor(t, "the boot in the log", logged.String, "booted")

	s, err := hub.Attach(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("typed\r")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, s, "typed")
	waitFor(t, "the viewer's echo in the log", logged.String, "typed")
	s.Close()
	if in := tty.Input(); in != "typed\r" {
		t.Errorf("the machine got %q", in)
	}
	// The viewer leaving leaves the held stream open: no second boot yet.
	if n := strings.Count(logged.String(), "booted"); n != 1 {
		t.Errorf("%d boots logged after a viewer left, want 1", n)
	}
}

// TestKeepReopens: when the machine's end closes the stream, Keep opens
// it again and goes on logging.
func TestKeepReopens(t *testing.T) {
	dir := t.TempDir()
	serialtest.Serve(t, dir, "m1", `echo booted; read x; echo bye`)
	hub := serial.NewHub(serial.UnixSockets(dir + "/{machine}.sock"))
	ctx := context.Background()
	logged := keep(t, hub, "m1")
	waitFor(t, "the boot in the log", logged.String, "booted")
	s, err := hub.Attach(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("q\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second boot in the log", logged.String, "bye\r\nbooted")
}

// keep holds machine's console in hub until the test ends, and returns
// its log.
func keep(t *testing.T, hub *serial.Hub, machine string) *syncbuf.Buffer {
	ctx, cancel := context.WithCancel(context.Background())
	logged := &syncbuf.Buffer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hub.Keep(ctx, machine, logged, func() bool { return true }, 50*time.Millisecond, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return logged
}

func waitFor(t *testing.T, what string, text func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(text(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s (%q) in a minute; got %q", what, want, text())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
