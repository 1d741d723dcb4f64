package backend_test

// Crash safety: a child process (this test binary, re-executed) writes to
// the store as fast as it can and reports each acknowledged write over a
// pipe; the parent SIGKILLs it at a random moment, reopens the store and
// checks that it opens, reads whole, and holds every acknowledged write.

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

	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/etcdtest"
)

const (
	envCrashURL   = "METAL_CRASH_CHILD_URL"
	envCrashRound = "METAL_CRASH_CHILD_ROUND"
	crashRounds   = 20
)

// TestCrashWriter is the child: it runs only when re-executed by
// crashRound, and writes until it is killed. Each write's ack line goes to
// fd 3 after the store returned from it:
//
//	machine NAME          a machine was created
//	label NAME N          machine NAME was updated to label n=N
//	event SEQ MESSAGE     an event was appended
//	lease MAC IP          a lease was allocated
func TestCrashWriter(t *testing.T) {
	url := os.Getenv(envCrashURL)
	if url == "" {
		t.Skip("the child of the crash tests; runs only when they start it")
	}
	round, _ := strconv.Atoi(os.Getenv(envCrashRound))
	acks := os.NewFile(3, "acks")
	ctx := context.Background()
	s, err := backend.Open(ctx, url, backend.Options{LockTimeout: 10 * time.Second, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintf(acks, "error %v\n", err)
		os.Exit(3)
	}
	ack := func(format string, args ...any) {
		// One write(2) per line: a kill never leaves half an ack.
		if _, err := acks.Write(fmt.Appendf(nil, format+"\n", args...)); err != nil {
			os.Exit(4)
		}
	}
	poolStart, poolEnd := netip.MustParseAddr("198.51.100.0"), netip.MustParseAddr("198.51.100.255")
	for i := 0; ; i++ {
		name := fmt.Sprintf("r%02d-m%06d", round, i)
		mac := fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", round, byte(i>>16), byte(i>>8), byte(i))
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		var werr error
		switch i % 4 {
		case 0, 1:
			m := inventory.Machine{Name: name, MAC: mac, Identity: inventory.Identity{Labels: map[string]string{"n": "0"}}}
			if _, werr = s.PutMachine(wctx, m); werr == nil {
				ack("machine %s", name)
			}
		case 2:
			prev := fmt.Sprintf("r%02d-m%06d", round, i-2)
			_, werr = inventory.UpdateMachine(wctx, s, prev, func(m *inventory.Machine) error {
				m.Identity.Labels = map[string]string{"n": strconv.Itoa(i)}
				return nil
			})
			if werr == nil {
				ack("label %s %d", prev, i)
			}
		case 3:
			var e inventory.Event
			if e, werr = s.AppendEvent(wctx, inventory.Event{Kind: inventory.EventDHCPAck, MAC: mac, Message: name}); werr == nil {
				ack("event %d %s", e.Seq, name)
			}
			if werr == nil {
				// Short leases: those of earlier rounds (checked already) expire
				// and free the /24 for this one.
				var l inventory.Lease
				if l, werr = s.AllocateLease(wctx, inventory.AllocateRequest{MAC: mac, Start: poolStart, End: poolEnd, TTL: 3 * time.Second}); werr == nil {
					ack("lease %s %s", mac, l.IP)
				}
			}
		}
		cancel()
		if werr != nil && !errors.Is(werr, inventory.ErrPoolExhausted) {
			// The store went away (the etcd server was killed): keep trying,
			// as a server would, until the parent kills this process.
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// acked is what the child acknowledged.
type acked struct {
	machines map[string]bool
	labels   map[string]int
	events   map[int64]string
	leases   map[string]string
	n        int
}

func parseAcks(t *testing.T, lines []string) acked {
	a := acked{machines: map[string]bool{}, labels: map[string]int{}, events: map[int64]string{}, leases: map[string]string{}}
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case f[0] == "machine" && len(f) == 2:
			a.machines[f[1]] = true
		case f[0] == "label" && len(f) == 3:
			n, _ := strconv.Atoi(f[2])
			a.labels[f[1]] = n
		case f[0] == "event" && len(f) == 3:
			seq, _ := strconv.ParseInt(f[1], 10, 64)
			a.events[seq] = f[2]
		case f[0] == "lease" && len(f) == 3:
			a.leases[f[1]] = f[2]
		default:
			t.Fatalf("child said %q", l)
		}
		a.n++
	}
	return a
}

// crashRound starts the writer on url, lets it write for a random time,
// runs during (if any) while it writes, SIGKILLs it and returns its acks.
func crashRound(t *testing.T, url string, round int, during func()) acked {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashURL+"="+url, envCrashRound+"="+strconv.Itoa(round))
	cmd.ExtraFiles = []*os.File{w}
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	child, err := testenv.StartChild(cmd)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan []string, 1)
	first := make(chan struct{}) // closed at the first ack line, or at EOF
	go func() {
		var out []string
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if out = append(out, sc.Text()); len(out) == 1 {
				close(first)
			}
		}
		if len(out) == 0 {
			close(first)
		}
		lines <- out
	}()
	// Kill at a random point once writing is under way: after the first
	// acknowledged write, however long the start took on this host (on a
	// loaded one, starting the child and opening the store alone can take
	// longer than the whole random window).
	select {
	case <-first:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		child.Wait()
		t.Fatalf("the writer acknowledged nothing in 2 minutes:\n%s", stderr.String())
	}
	time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
	if during != nil {
		during()
	}
	cmd.Process.Kill() // SIGKILL, by PID: only the child this test started
	werr := child.Wait()
	r.Close()
	got := <-lines
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended on its own (%v) before the kill:\n%s\nacks: %q", werr, stderr.String(), got)
	}
	return parseAcks(t, got)
}

// checkAcked reopens the store and checks it is whole and holds every
// acknowledged write.
func checkAcked(t *testing.T, url string, a acked) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := backend.Open(ctx, url, backend.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer s.Close()
	// Whole: every record decodes, the dump reads through.
	ms, _, err := s.Machines(ctx)
	if err != nil {
		t.Fatalf("list machines after SIGKILL: %v", err)
	}
	byName := map[string]inventory.Machine{}
	for _, m := range ms {
		byName[m.Name] = m
	}
	if _, err := s.Dump(ctx, func(inventory.Record) error { return nil }); err != nil {
		t.Fatalf("dump after SIGKILL: %v", err)
	}
	for name := range a.machines {
		if _, ok := byName[name]; !ok {
			t.Errorf("acknowledged machine %s lost", name)
		}
	}
	for name, n := range a.labels {
		// A later write may have landed unacknowledged; never an earlier one.
		got, _ := strconv.Atoi(byName[name].Identity.Labels["n"])
		if got < n {
			t.Errorf("machine %s: label n=%d, acknowledged n=%d", name, got, n)
		}
	}
	for seq, msg := range a.events {
		evs, err := s.Events(ctx, inventory.EventQuery{AfterSeq: seq - 1, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Seq != seq || evs[0].Message != msg {
			t.Errorf("acknowledged event %d (%s) lost: read %+v", seq, msg, evs)
		}
	}
	for mac, ip := range a.leases {
		l, err := s.Lease(ctx, mac)
		if err != nil || l.IP.String() != ip {
			t.Errorf("acknowledged lease %s of %s: read %v %v", ip, mac, l.IP, err)
		}
		if by, err := s.LeaseByIP(ctx, l.IP); err != nil || by.MAC != mac {
			t.Errorf("address %s: lease of %q (%v), want %s", ip, by.MAC, err, mac)
		}
	}
}

// killWriterRounds runs crashRounds rounds of writing to url and killing
// the writer, checking the store after each, and returns how many writes
// were acknowledged in all.
func killWriterRounds(t *testing.T, url string) int {
	t.Helper()
	total := 0
	for round := range crashRounds {
		a := crashRound(t, url, round, nil)
		checkAcked(t, url, a)
		total += a.n
		if t.Failed() {
			t.Fatalf("round %d", round)
		}
	}
	if total < crashRounds {
		t.Fatalf("only %d acknowledged writes in %d rounds: the child hardly wrote", total, crashRounds)
	}
	return total
}

func TestCrashBolt(t *testing.T) {
	total := killWriterRounds(t, "file://"+filepath.Join(t.TempDir(), "state.db"))
	t.Logf("%d rounds, %d acknowledged writes, all kept", crashRounds, total)
}

// TestCrashEtcd kills the writing client (a metal server) twenty times,
// then once kills the etcd server itself under the writer.
func TestCrashEtcd(t *testing.T) {
	c := etcdtest.New(t, 1)
	url := c.StateURL("/metal-crash")
	total := killWriterRounds(t, url)
	a := crashRound(t, url, crashRounds, func() {
		time.Sleep(300 * time.Millisecond) // some writes acknowledged first
		if err := c.Stop(0, true); err != nil {
			t.Fatal(err)
		}
		// The writer fails (and acks nothing) until it is killed.
		time.Sleep(300 * time.Millisecond)
	})
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(0); err != nil {
		t.Fatal(err)
	}
	checkAcked(t, url, a)
	t.Logf("%d rounds killing the writer, %d acknowledged writes; then etcd killed after %d more: all kept", crashRounds, total, a.n)
}
