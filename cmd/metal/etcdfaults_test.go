package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory/etcdtest"
)

// etcdRollout: a canary, then batches of 4, one rack at a time, no stagger.
const etcdRollout = "  canary = 1\n  batch_size = 4\n  by = \"rack\"\n  stagger = \"0s\""

// TestApplyEtcdMemberLost: `metal apply` on a 3-member etcd cluster; the
// cluster's raft leader is killed (SIGKILL) while the second batch
// installs. The apply carries on through the other two members and
// finishes: every machine provisioned, each written once, nothing left in
// the plan.
func TestApplyEtcdMemberLost(t *testing.T) {
	if _, err := etcdtest.Binary(); err != nil {
		t.Skip(err)
	}
	c := etcdtest.New(t, 3)
	l := newApplyLabOn(t, c, 12, 300*time.Millisecond, etcdRollout)
	bin := buildMetal(t)

	p := startMetal(t, bin, append([]string{"apply", "--auto-approve", l.site}, l.runtimeFlags()...)...)
	waitFor(t, p, "the second batch's agents", func() bool { return len(l.fleet.AgentOrder()) >= 3 })
	leader, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(leader, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed etcd member %s, the raft leader, with %d agents started", c.Name(leader), len(l.fleet.AgentOrder()))
	if err := p.wait(3 * time.Minute); err != nil {
		t.Fatalf("metal apply after losing an etcd member: %v\n%s", err, p.out.String())
	}
	if !strings.Contains(p.out.String(), "12 done, 0 failed, 0 not started") {
		t.Errorf("apply summary:\n%s", p.out.String())
	}
	l.assertOnce()
}

// TestApplyLeaderLost: two metal applies for one site on etcd; the one
// that leads is killed (SIGKILL) mid-rollout. The other, `metal apply
// --resume` waiting on the apply election, takes over once the dead
// one's session ends (its TTL) and finishes the run: the machines the
// dead one left mid-install are waited for, not installed again. A third,
// plain `metal apply` that planned while the run was unfinished and then
// waited is refused (its plan is stale) rather than installing machines
// again.
func TestApplyLeaderLost(t *testing.T) {
	if _, err := etcdtest.Binary(); err != nil {
		t.Skip(err)
	}
	l := newApplyLab(t, 12, 500*time.Millisecond, etcdRollout)
	bin := buildMetal(t)

	first := startMetal(t, bin, append([]string{"apply", "--auto-approve", l.site}, l.runtimeFlags()...)...)
	waitFor(t, first, "the canary's agent", func() bool { return len(l.fleet.AgentOrder()) >= 1 })
	// Each metal has its own state directory (one per server); the
	// agents' token key is the site's, shared.
	second := startMetal(t, bin, append([]string{"apply", "--resume", "--auto-approve", l.site}, l.otherServer("b")...)...)
	waitFor(t, second, "the second apply to wait", func() bool { return strings.Contains(second.out.String(), "Another metal apply") })
	waitFor(t, first, "the second batch's agents", func() bool { return len(l.fleet.AgentOrder()) >= 3 })
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = first.wait(time.Minute)
	t.Logf("killed the leading metal apply with %d agents started", len(l.fleet.AgentOrder()))

	third := startMetal(t, bin, append([]string{"apply", "--auto-approve", l.site}, l.otherServer("c")...)...)
	if err := second.wait(3 * time.Minute); err != nil {
		t.Fatalf("metal apply --resume after the leader died: %v\n%s\nthe first said:\n%s", err, second.out.String(), first.out.String())
	}
	t.Logf("the second metal apply finished the run %v after the first was killed", time.Since(killed).Round(time.Millisecond))
	if !strings.Contains(second.out.String(), "12 done, 0 failed, 0 not started") {
		t.Errorf("resumed run's summary:\n%s", second.out.String())
	}
	err := third.wait(3 * time.Minute)
	if err == nil || !strings.Contains(third.out.String(), "the inventory changed since the plan was made") {
		t.Errorf("a plain apply that planned before the takeover: %v\n%s", err, third.out.String())
	}
	l.assertOnce()
}

// otherServer is runtimeFlags for another metal server of the site: its
// own state directory, holding the site's agent token key.
func (l *applyLab) otherServer(name string) []string {
	l.t.Helper()
	dir := filepath.Join(l.dir, "state-"+name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		l.t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(l.dir, "state", "token.key"))
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token.key"), key, 0o600); err != nil {
		l.t.Fatal(err)
	}
	flags := l.runtimeFlags()
	for i := range flags {
		if flags[i] == "--state-dir" {
			flags[i+1] = dir
		}
	}
	return flags
}

// assertOnce checks every machine's image was written once by an agent
// booted once, and the plan has nothing left.
func (l *applyLab) assertOnce() {
	t := l.t
	t.Helper()
	want := map[string]int{}
	for _, n := range l.fleet.Names() {
		want[n] = 1
	}
	if d := cmp.Diff(want, l.fleet.Written()); d != "" {
		t.Errorf("images written per machine (-want +got):\n%s", d)
	}
	if d := cmp.Diff(want, l.fleet.Started()); d != "" {
		t.Errorf("install agents started per machine (-want +got):\n%s", d)
	}
	if code, stdout, stderr := metal(t, nil, "plan", "--detailed-exitcode", l.site); code != 0 || !strings.Contains(stdout, "No changes") {
		t.Errorf("plan after the apply: exit %d\n%s%s", code, stdout, stderr)
	}
}

// metalProc is a metal process of a test, its output kept.
type metalProc struct {
	cmd   *exec.Cmd
	out   *syncbuf.Buffer
	child *testenv.Child
}

func startMetal(t *testing.T, bin string, args ...string) *metalProc {
	t.Helper()
	p := &metalProc{cmd: exec.Command(bin, args...), out: &syncbuf.Buffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	child, err := testenv.StartChild(p.cmd)
	if err != nil {
		t.Fatal(err)
	}
	p.child = child
	t.Cleanup(func() {
		select {
		case <-child.Done():
		default:
			_ = p.cmd.Process.Kill() // by PID: this test's process
			_ = child.Wait()
		}
	})
	return p
}

// wait waits for the process to end and returns how it ended.
func (p *metalProc) wait(d time.Duration) error {
	select {
	case <-p.child.Done():
		return p.child.Wait()
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		_ = p.child.Wait()
		return context.DeadlineExceeded
	}
}

// waitFor waits up to a minute for cond while p runs.
func waitFor(t *testing.T, p *metalProc, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		select {
		case <-p.child.Done():
			t.Fatalf("waiting for %s: metal %s ended (%v):\n%s", what, strings.Join(p.cmd.Args[1:3], " "), p.child.Wait(), p.out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within a minute:\n%s", what, p.out.String())
		}
	}
}
