package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.etcd.io/bbolt"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
)

// killPoints is how many times TestApplyKillPoints kills `metal apply`.
const killPoints = 50

// TestApplyKillPoints kills `metal apply` (the process that runs the
// converge engine and the netboot servers today) with SIGKILL at 50 random
// points of applies of simulated machines on the embedded bbolt store, and
// carries each run on with `metal apply --resume` (itself killed again at
// random) until it finishes. The simulated BMCs and agents live in this
// test process, so they outlive every kill, and count what each machine
// did. Then: every machine is provisioned, each was booted into the
// install agent and installed exactly once (a machine whose install was
// under way at a kill is waited for, never reinstalled), the plan has
// nothing left, and the bbolt file passes bbolt's own consistency check
// with the run recorded done.
//
// Kill points are random (seeded: METAL_KILL_SEED=N reruns a failure's
// points, the seed is logged) in two kinds: after the Nth progress line
// of the engine (--json, one line per machine step, agent report, batch)
// plus a few milliseconds, and in the first second of a process (start,
// store sync, recording the run, before any line).
func TestApplyKillPoints(t *testing.T) {
	t.Parallel()
	killPointsTest(t, false)
}

// TestServeKillPoints is TestApplyKillPoints where the apply runs in a
// `metal serve` (metal apply submits it over the daemon's local socket and
// streams its progress): serve is what is killed, at 50 random points of
// the submitted run, then started again, and `metal apply --resume`
// submits the rest, until the run is done; the same outcome is asserted.
func TestServeKillPoints(t *testing.T) {
	t.Parallel()
	killPointsTest(t, true)
}

func killPointsTest(t *testing.T, serve bool) {
	bin := buildMetal(t)
	seed := time.Now().UnixNano()
	if s := os.Getenv("METAL_KILL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("METAL_KILL_SEED=%q: %v", s, err)
		}
	}
	t.Logf("kill points seeded with METAL_KILL_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	points := killPoints
	kills := 0
	for round := 1; kills < points; round++ {
		want := min(1+rng.IntN(6), points-kills)
		r := newKillRound(t, bin, round, 8, serve)
		start := time.Now()
		made := r.run(rng, want)
		kills += made
		t.Logf("round %d: %d kills in %v", round, made, time.Since(start).Round(time.Millisecond))
		if t.Failed() {
			t.Fatalf("round %d failed (METAL_KILL_SEED=%d)", round, seed)
		}
	}
}

// killRound is one apply of a fresh simulated fleet whose state is a bbolt
// file only metal's processes open: each `metal apply`, or with serve, the
// `metal serve` the applies are submitted to.
type killRound struct {
	t      *testing.T
	bin    string
	round  int
	n      int
	dir    string
	state  string
	site   string
	db     string
	listen string
	fleet  *applytest.Fleet
	// serve: the apply runs in a metal serve, the process killed.
	serve *serveProc
	// log is what every attempt printed, for a failure's report.
	log strings.Builder
}

func newKillRound(t *testing.T, bin string, round, n int, serve bool) *killRound {
	t.Helper()
	r := &killRound{t: t, bin: bin, round: round, n: n, dir: t.TempDir(), listen: fixedTCPAddr(t)}
	r.state = filepath.Join(r.dir, "state")
	r.db = filepath.Join(r.state, "state.db")
	if serve {
		r.serve = &serveProc{r: r}
		t.Cleanup(r.serve.stop)
	}
	f, err := applytest.Start(applytest.Options{Machines: n, Racks: 2,
		AgentURL: "http://" + r.listen, TokenKey: filepath.Join(r.state, "token.key")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	r.fleet = f
	r.site = filepath.Join(r.dir, "site.hcl")
	rollout := "  canary = 1\n  batch_size = 3\n  by = \"rack\"\n  stagger = \"0s\""
	if err := os.WriteFile(r.site, f.SiteHCL("file://"+r.db, rollout), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// fixedTCPAddr is a free loopback address below the kernel's ephemeral
// port range: metal listens on it again after every kill, and a port the
// kernel hands out (to the fleet's BMCs, to any client) could be taken in
// between.
func fixedTCPAddr(t *testing.T) string {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(lo-10000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

// attempt is one `metal apply` process of a round and how it ended.
type attempt struct {
	killed bool
	err    error // its exit, when not killed
	lines  int   // progress lines it printed
	done   int   // machines it reported done
	out    string
}

// start runs metal apply with args and kills it (with serve, the metal
// serve it submits to) when kill says so: after line `after` (0: from the
// start) and then jitter; after < 0 never.
func (r *killRound) start(args []string, after int, jitter time.Duration) attempt {
	r.t.Helper()
	args = append(args, "--json", "--auto-approve", r.site, "--state-dir", r.state,
		"--step-timeout", "10s", "--agent-timeout", "60s")
	if r.serve == nil {
		args = append(args, "--listen", r.listen, "--tftp-addr", "127.0.0.1:0",
			"--agent-kernel", "/agent/vmlinuz", "--agent-initrd", "/agent/initrd.img")
	} else {
		r.serve.start()
	}
	cmd := exec.Command(r.bin, args...)
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	// A pipe of its own, not StdoutPipe: the child's Wait would close that
	// as the process ends, perhaps before it is read to the end.
	stdout, w, err := os.Pipe()
	if err != nil {
		r.t.Fatal(err)
	}
	cmd.Stdout = w
	child, err := testenv.StartChild(cmd)
	w.Close()
	if err != nil {
		stdout.Close()
		r.t.Fatal(err)
	}
	var a attempt
	var out bytes.Buffer
	reached := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer stdout.Close()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			out.Write(sc.Bytes())
			out.WriteByte('\n')
			a.lines++
			var e apply.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "done" {
				a.done++
			}
			if a.lines == after {
				close(reached)
			}
		}
	}()
	if after == 0 {
		close(reached)
	}
	exited := make(chan error, 1)
	go func() {
		<-read // out and a's counts are whole once the reader is done
		exited <- child.Wait()
	}()
	kill := func() {
		// By PID: only processes this test started.
		if r.serve != nil {
			a.killed = r.serve.kill()
			return
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
	}
	if after >= 0 {
		select {
		case <-reached:
			select {
			case <-time.After(jitter):
				kill()
			case err := <-exited:
				exited <- err
			}
		case err := <-exited:
			exited <- err
		}
	}
	select {
	case err = <-exited:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		err = <-exited
		r.t.Errorf("round %d: metal apply %v did not end in 3 minutes", r.round, args[:2])
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
		a.killed = true
	} else if !a.killed {
		a.err = err
	}
	a.out = out.String() + stderr.String()
	fmt.Fprintf(&r.log, "--- metal %s (kill after line %d +%v): killed=%v exit=%v\n%s", strings.Join(args[:2], " "), after, jitter, a.killed, err, a.out)
	if r.serve != nil {
		fmt.Fprintf(&r.log, "--- metal serve said:\n%s", r.serve.out.String())
	}
	return a
}

// serveProc is the round's metal serve, started again after each kill.
type serveProc struct {
	r      *killRound
	cmd    *exec.Cmd
	exited <-chan struct{}
	out    syncbuf.Buffer
}

// start starts metal serve unless it runs, and waits until its local
// socket answers (until then metal apply would run in-process).
func (s *serveProc) start() {
	t := s.r.t
	t.Helper()
	if s.cmd != nil {
		select {
		case <-s.exited:
		default:
			return
		}
	}
	s.out = syncbuf.Buffer{}
	// The API on a port of its own: the default 127.0.0.1:9090 is the host's,
	// shared with every other test package running at the same time.
	s.cmd = exec.Command(s.r.bin, "serve", "--api-listen", "127.0.0.1:0", "--listen", s.r.listen, "--tftp-addr", "127.0.0.1:0", "--state-dir", s.r.state,
		"--agent-kernel", "/agent/vmlinuz", "--agent-initrd", "/agent/initrd.img", s.r.site)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	child, err := testenv.StartChild(s.cmd)
	if err != nil {
		t.Fatal(err)
	}
	exited := child.Done()
	s.exited = exited
	sock := filepath.Join(s.r.state, "api.sock")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("round %d: metal serve exited at start:\n%s", s.r.round, s.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("round %d: metal serve's socket never answered:\n%s", s.r.round, s.out.String())
		}
	}
}

// kill SIGKILLs metal serve; false if it was not running.
func (s *serveProc) kill() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	return true
}

// stop ends metal serve as an operator would (SIGTERM), so the store can
// be opened after it.
func (s *serveProc) stop() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.r.t.Errorf("round %d: metal serve did not stop on SIGTERM:\n%s", s.r.round, s.out.String())
		s.kill()
	}
}

// run kills the round's apply kills times at random points, then lets the
// last --resume finish, and checks the outcome. It returns the kills made
// (fewer when the apply finished before a kill point was reached).
func (r *killRound) run(rng *rand.Rand, kills int) int {
	t := r.t
	args := []string{"apply", "--auto-approve"}
	made, doneSeen := 0, 0
	for attempts := 0; ; attempts++ {
		if attempts > kills+10 {
			t.Errorf("round %d: no end after %d attempts\n%s", r.round, attempts, r.log.String())
			return made
		}
		after, jitter := -1, time.Duration(0)
		if made < kills {
			// About ten progress lines per machine still to do.
			left := max(r.n-doneSeen, 1)
			if rng.IntN(5) == 0 {
				after, jitter = 0, time.Duration(rng.IntN(1000))*time.Millisecond
			} else {
				after, jitter = 1+rng.IntN(10*left+4), time.Duration(rng.IntN(20))*time.Millisecond
			}
		}
		a := r.start(args, after, jitter)
		doneSeen += a.done
		switch {
		case a.killed:
			made++
			args = []string{"apply", "--resume"}
			continue
		case a.err == nil:
		case strings.Contains(a.out, "no interrupted apply run"):
			// Killed before the run was recorded, or after it was
			// recorded done: a new apply plans what is left.
			args = []string{"apply", "--auto-approve"}
			continue
		default:
			t.Errorf("round %d: metal %s: %v\n%s", r.round, strings.Join(args, " "), a.err, r.log.String())
			return made
		}
		break
	}
	if r.serve != nil {
		r.serve.stop()
	}
	r.check()
	return made
}

// check asserts the round's outcome: the fleet's counts, the plan, the
// bbolt file and what it records.
func (r *killRound) check() {
	t := r.t
	want, counts := fleetCounts(r.fleet)
	// Images written to the end, whether or not metal heard of it before
	// a kill (a report whose answer a kill cut off is retried, and found
	// stale once the machine moved on: Installs would not count it).
	for what, got := range counts {
		if !cmp.Equal(want, got) {
			t.Errorf("round %d: %s per machine (-want +got):\n%s\n%s", r.round, what, cmp.Diff(want, got), r.log.String())
		}
	}

	plan := exec.Command(r.bin, "plan", "--detailed-exitcode", r.site)
	if out, err := plan.CombinedOutput(); err != nil || !strings.Contains(string(out), "No changes") {
		t.Errorf("round %d: plan after the apply: %v\n%s", r.round, err, out)
	}

	// bbolt's own check of pages, freelist and buckets.
	db, err := bbolt.Open(r.db, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("round %d: open %s: %v", r.round, r.db, err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		return errors.Join(errs...)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Errorf("round %d: bbolt check of %s: %v", r.round, r.db, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store, err := backend.Open(ctx, "file://"+r.db, backend.Options{})
	if err != nil {
		t.Fatalf("round %d: open the store: %v", r.round, err)
	}
	defer store.Close()
	ms, _, err := store.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, m := range ms {
		if m.State != inventory.StateProvisioned || m.Intent.Action != inventory.BootLocal || m.Agent == nil || m.Agent.Phase != inventory.AgentDone {
			bad = append(bad, fmt.Sprintf("%s: %s, intent %s, agent %+v", m.Name, m.State, m.Intent.Action, m.Agent))
		}
	}
	if len(ms) != r.n || len(bad) > 0 {
		t.Errorf("round %d: %d machines in the store, want %d; not provisioned: %v", r.round, len(ms), r.n, bad)
	}
	runs, err := store.ApplyRuns(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, run := range runs {
		if run.State != inventory.RunDone {
			states = append(states, run.ID+" "+string(run.State))
		}
	}
	sort.Strings(states)
	if len(runs) == 0 || runs[len(runs)-1].State != inventory.RunDone {
		t.Errorf("round %d: the last apply run is not done; runs not done: %v", r.round, states)
	}
	// Runs not done are the ones a new apply superseded (its first
	// process was killed before it recorded its run as started).
	for _, run := range runs {
		if run.State == inventory.RunRunning || run.State == inventory.RunInterrupted {
			t.Errorf("round %d: run %s left %s", r.round, run.ID, run.State)
		}
	}
}

// fleetCounts is what each machine of f did, by what (install agents
// started, images written, network boots), and want: once each.
func fleetCounts(f *applytest.Fleet) (want map[string]int, counts map[string]map[string]int) {
	want = map[string]int{}
	boots := map[string]int{}
	for _, n := range f.Names() {
		want[n] = 1
		for _, b := range f.Sim(n).Boots() {
			if b.Target == "Pxe" && b.Enabled != "Disabled" {
				boots[n]++
			}
		}
	}
	return want, map[string]map[string]int{"install agents started": f.Started(), "images written": f.Written(), "network boots": boots}
}
