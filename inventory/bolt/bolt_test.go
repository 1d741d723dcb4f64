package bolt_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/bolt"
	"github.com/metal-dev/metal/inventory/storetest"
)

// crashChildEnv makes the test binary a child that writes until killed.
const crashChildEnv = "METAL_BOLT_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		os.Exit(crashChild(path))
	}
	os.Exit(m.Run())
}

func openKV(t testing.TB, path string) *bolt.KV {
	t.Helper()
	kv, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{New: func(t *testing.T) inventory.KV {
		return openKV(t, filepath.Join(t.TempDir(), "state.db"))
	}})
}

func TestSecondOpenNamesHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	kv := openKV(t, path)
	defer kv.Close()
	_, err := bolt.Open(path, bolt.Options{LockTimeout: 50 * time.Millisecond})
	want := fmt.Sprintf("state store %s is locked by PID %d (another metal running?): store in use", path, os.Getpid())
	if err == nil || err.Error() != want || !errors.Is(err, bolt.ErrLocked) {
		t.Fatalf("second open: got %v, want %q (bolt.ErrLocked)", err, want)
	}
	// Once closed, the next process gets it.
	kv.Close()
	kv2 := openKV(t, path)
	kv2.Close()
}

func TestReopenKeepsDataAndRevision(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := inventory.Open(ctx, openKV(t, path), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.PutMachine(ctx, inventory.Machine{Name: "a", MAC: "52:54:00:00:00:0a"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = inventory.Open(ctx, openKV(t, path), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Machine(ctx, "a")
	if err != nil || got.Revision != m.Revision {
		t.Fatalf("after reopen: %+v, %v (want revision %d)", got, err, m.Revision)
	}
	// Revisions keep growing across opens, so CAS stays meaningful.
	m2, err := s.PutMachine(ctx, got)
	if err != nil || m2.Revision <= m.Revision {
		t.Fatalf("write after reopen: %+v, %v", m2, err)
	}
}

// crashChild writes machines and events as fast as it can and prints "ack N"
// after each write returned, until it is killed.
func crashChild(path string) int {
	ctx := context.Background()
	kv, err := bolt.Open(path, bolt.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s, err := inventory.Open(ctx, kv, inventory.Options{EventRetention: 1000000})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ms, _, err := s.Machines(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	w := bufio.NewWriter(os.Stdout)
	for i := len(ms); ; i++ {
		name := fmt.Sprintf("m%06d", i)
		mac := fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
		if _, err := s.PutMachine(ctx, inventory.Machine{Name: name, MAC: mac, Hardware: &inventory.Hardware{Extra: map[string]string{"pad": strings.Repeat("x", 2000)}}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if _, err := s.AppendEvent(ctx, inventory.Event{Machine: name, Kind: inventory.EventAgent, Message: "written"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Fprintf(w, "ack %d\n", i)
		w.Flush()
	}
}

// TestCrashKeepsAcknowledgedWrites kills a writing child with SIGKILL at
// random points, several times over, and checks that the store reopens and
// holds every write the child saw acknowledged.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	acked := -1
	ackedSet := map[int]bool{} // every write seen acknowledged, all rounds
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// os.Process signals through a pidfd: never a recycled PID.
		t.Cleanup(func() { cmd.Process.Kill() })
		lines := make(chan int, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "ack ")); err == nil {
					lines <- n
				}
			}
		}()
		// Let it write for a random while (at least a few writes), then kill.
		deadline := time.After(time.Duration(150+rand.IntN(400)) * time.Millisecond)
		writes := 0
	wait:
		for {
			select {
			case n, ok := <-lines:
				if !ok {
					t.Fatalf("round %d: child exited: %v", round, cmd.Wait())
				}
				acked, writes = n, writes+1
				ackedSet[n] = true
			case <-deadline:
				if writes >= 3 {
					break wait
				}
				deadline = time.After(50 * time.Millisecond)
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for n := range lines { // acks printed before the kill landed
			acked = n
			ackedSet[n] = true
		}
		cmd.Wait()

		ctx := context.Background()
		kv := openKV(t, path)
		s, err := inventory.Open(ctx, kv, inventory.Options{EventRetention: 1000000})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		ms, _, err := s.Machines(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Every acknowledged write is there; at most the one in flight more.
		if len(ms) < acked+1 || len(ms) > acked+2 {
			t.Errorf("round %d: %d machines after %d acknowledged", round, len(ms), acked+1)
		}
		for i := 0; i <= acked; i++ {
			if ms[i].Name != fmt.Sprintf("m%06d", i) {
				t.Fatalf("round %d: machine %d is %s", round, i, ms[i].Name)
			}
		}
		evs, err := s.Events(ctx, inventory.EventQuery{})
		if err != nil {
			t.Fatal(err)
		}
		evented := map[string]bool{}
		for i, e := range evs {
			if e.Seq != int64(i+1) {
				t.Fatalf("round %d: event %d has seq %d", round, i, e.Seq)
			}
			evented[e.Machine] = true
		}
		for n := range ackedSet {
			if !evented[fmt.Sprintf("m%06d", n)] {
				t.Errorf("round %d: acknowledged event of m%06d is missing", round, n)
			}
		}
		t.Logf("round %d: killed after %d acknowledged writes, store intact", round, acked+1)
		s.Close()
	}
}

func benchStore(b *testing.B) inventory.Store {
	b.Helper()
	s, err := inventory.Open(context.Background(), openKV(b, filepath.Join(b.TempDir(), "state.db")), inventory.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchMAC(i int) string {
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

func BenchmarkPutMachine(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	i := 0
	for b.Loop() {
		if _, err := s.PutMachine(ctx, inventory.Machine{Name: fmt.Sprintf("m%d", i), MAC: benchMAC(i)}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGetMachine(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	const n = 1000
	for i := range n {
		if _, err := s.PutMachine(ctx, inventory.Machine{Name: fmt.Sprintf("m%d", i), MAC: benchMAC(i)}); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		if _, err := s.MachineByMAC(ctx, benchMAC(i%n)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkAllocateLease(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	i := 0
	for b.Loop() {
		// A /16 so the pool never runs out within a benchmark run.
		if _, err := s.AllocateLease(ctx, inventory.AllocateRequest{MAC: benchMAC(i), Start: netip.MustParseAddr("10.1.0.1"), End: netip.MustParseAddr("10.1.255.254"), TTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
