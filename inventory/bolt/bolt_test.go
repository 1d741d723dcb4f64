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
	"sync"
	"sync/atomic"
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

// TestConcurrentCASIsExact has writers race to increment one counter with
// compare-and-swap, so their writes share commits: every increment that
// reported success is counted once, each at its own revision, and a
// watcher sees the revisions in order.
func TestConcurrentCASIsExact(t *testing.T) {
	ctx := context.Background()
	kv := openKV(t, filepath.Join(t.TempDir(), "state.db"))
	defer kv.Close()
	watch, err := kv.Watch(ctx, "counter", 0)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 20
	var mu sync.Mutex
	revs := map[int64]bool{}
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				cur, _, err := kv.Get(ctx, "counter")
				if err != nil {
					t.Error(err)
					return
				}
				n, _ := strconv.Atoi(string(cur.Value))
				rev, ok, err := kv.Txn(ctx, inventory.Txn{If: []inventory.Cond{{Key: "counter", ModRev: cur.ModRev}},
					Then: []inventory.Op{inventory.Put("counter", []byte(strconv.Itoa(n+1)))}})
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					if revs[rev] {
						t.Errorf("revision %d acknowledged twice", rev)
					}
					revs[rev] = true
					mu.Unlock()
					done++
				}
			}
		}()
	}
	wg.Wait()
	got, _, err := kv.Get(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Value) != strconv.Itoa(writers*each) || len(revs) != writers*each {
		t.Fatalf("counter %s after %d acknowledged increments, want %d", got.Value, len(revs), writers*each)
	}
	var last int64
	for i := 1; i <= writers*each; i++ {
		e := <-watch
		if e.Err != nil || e.ModRev <= last || string(e.Value) != strconv.Itoa(i) {
			t.Fatalf("watch event %d: %+v after revision %d", i, e, last)
		}
		last = e.ModRev
	}
}

// TestRefusedWriteFailsAlone sends writes bbolt refuses (an empty key)
// among good ones: only they fail, whichever commit they shared.
func TestRefusedWriteFailsAlone(t *testing.T) {
	ctx := context.Background()
	kv := openKV(t, filepath.Join(t.TempDir(), "state.db"))
	defer kv.Close()
	const n = 64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%02d", i)
			if i%8 == 0 {
				key = ""
			}
			_, _, errs[i] = kv.Txn(ctx, inventory.Txn{Then: []inventory.Op{inventory.Put(key, []byte("v"))}})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		_, found, gerr := kv.Get(ctx, fmt.Sprintf("k%02d", i))
		switch {
		case gerr != nil:
			t.Fatal(gerr)
		case i%8 == 0 && err == nil:
			t.Errorf("write %d with an empty key succeeded", i)
		case i%8 != 0 && (err != nil || !found):
			t.Errorf("write %d: %v, stored %v", i, err, found)
		}
	}
}

// TestWriteAfterCloseFails: a closed store refuses writes rather than
// leaving them waiting for a committer that is gone.
func TestWriteAfterCloseFails(t *testing.T) {
	kv := openKV(t, filepath.Join(t.TempDir(), "state.db"))
	kv.Close()
	if _, _, err := kv.Txn(context.Background(), inventory.Txn{Then: []inventory.Op{inventory.Put("k", []byte("v"))}}); err == nil {
		t.Fatal("write after Close succeeded")
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

// BenchmarkPutMachineParallel writes from many goroutines, as the engine
// and the DHCP workers do: their writes share commits.
func BenchmarkPutMachineParallel(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	var next atomic.Int64
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1))
			if _, err := s.PutMachine(ctx, inventory.Machine{Name: fmt.Sprintf("m%d", i), MAC: benchMAC(i)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
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
