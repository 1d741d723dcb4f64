package dhcp

import (
	"context"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/metal-dev/metal/pxe/pxetest"
)

// forkStorm runs true over and over on n goroutines until the test ends:
// at any moment some child process of the test has just been forked and
// not yet exec'd, with a copy of every socket the test holds.
func forkStorm(t *testing.T, n int) {
	t.Helper()
	path, err := exec.LookPath("true")
	if err != nil {
		t.Fatalf("no true on PATH (coreutils): %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_ = exec.CommandContext(ctx, path).Run()
			}
		}()
	}
}

// TestSteerUnderForks: while the test forks and execs all the time on
// other goroutines, port 67 of a fresh namespace is opened as the steered
// pair again and again, each time as soon as the last pair is gone, and
// never found in use: the pair is made without closing and binding any
// socket again (a socket closed a moment before a fork stays bound until
// the child's exec ends). Then a server starts and stops in a loop, each
// start right after the last stop, when the port can still be held for
// a moment by children forked while the last server ran.
func TestSteerUnderForks(t *testing.T) {
	lab := pxetest.NewLab(t)
	forkStorm(t, 4)
	const pairs = 2000
	for i := range pairs {
		for deadline := time.Now().Add(10 * time.Second); udpBound(t, lab.NS(), serverPort); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("pair %d: port 67 still held 10 s after the last pair was closed", i)
			}
		}
		conns, err := listenSteeredIn(lab)
		if err != nil {
			t.Fatalf("pair %d of %d: %v", i, pairs, err)
		}
		for _, c := range conns {
			c.Close()
		}
		if len(conns) != 2 {
			t.Fatalf("pair %d: %d sockets, want 2", i, len(conns))
		}
	}
	for range 20 {
		_, stop := startServer(t, lab, labConfig(), newTestPolicy(), nil)
		stop()
	}
}
