package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/etcdtest"
)

// applyLab is a simulated fleet whose state lives in a real etcd, so the
// test (the simulated agents) and a `metal apply` process share it.
type applyLab struct {
	t      *testing.T
	dir    string
	site   string
	listen string
	state  string
	store  inventory.Store
	fleet  *applytest.Fleet
}

func newApplyLab(t *testing.T, n int, agentTime time.Duration, rollout string) *applyLab {
	t.Helper()
	if _, err := etcdtest.Binary(); err != nil {
		t.Skip(err)
	}
	return newApplyLabOn(t, etcdtest.New(t, 1), n, agentTime, rollout)
}

// newApplyLabOn is newApplyLab on a cluster the caller started.
func newApplyLabOn(t *testing.T, c *etcdtest.Cluster, n int, agentTime time.Duration, rollout string) *applyLab {
	t.Helper()
	l := &applyLab{t: t, dir: t.TempDir(), state: c.StateURL("/apply-test/")}
	l.listen = freeTCPAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store, err := backend.Open(ctx, l.state, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	l.store = store
	// The agents report to the HTTP server of the `metal apply` under
	// test, signed with the key it keeps in its state directory.
	f, err := applytest.Start(applytest.Options{Machines: n, Racks: 2, Store: store, AgentTime: agentTime,
		AgentURL: "http://" + l.listen, TokenKey: filepath.Join(l.dir, "state", "token.key")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	l.fleet = f
	l.site = filepath.Join(l.dir, "site.hcl")
	l.writeSite(rollout, nil)
	return l
}

func (l *applyLab) writeSite(rollout string, edit func(string) string) {
	writeFleetSite(l.t, l.fleet, l.site, l.state, rollout, edit)
}

// writeFleetSite writes the fleet's site file at path, its state at
// state, edited by edit if given.
func writeFleetSite(t *testing.T, f *applytest.Fleet, path, state, rollout string, edit func(string) string) {
	t.Helper()
	src := string(f.SiteHCL(state, rollout))
	if edit != nil {
		src = edit(src)
	}
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runtimeFlags keep the in-process netboot servers on loopback ports and
// give the (simulated) agent a kernel path.
func (l *applyLab) runtimeFlags() []string {
	return []string{"--listen", l.listen, "--tftp-addr", "127.0.0.1:0", "--state-dir", filepath.Join(l.dir, "state"),
		"--agent-kernel", "/agent/vmlinuz", "--agent-initrd", "/agent/initrd.img", "--step-timeout", "10s", "--agent-timeout", "30s"}
}

const testRollout = `  canary = 1
  batch_size = 4
  by = "rack"
  stagger = "0s"`

// TestApplyKillResume kills `metal apply` with SIGKILL while agents are
// installing, then `metal apply --resume` finishes the run: every machine
// is installed exactly once, and the plan then has nothing left to do.
func TestApplyKillResume(t *testing.T) {
	l := newApplyLab(t, 16, 300*time.Millisecond, testRollout)
	bin := buildMetal(t)

	code, _, stderr := metal(t, nil, "plan", "--detailed-exitcode", l.site)
	if code != exitChanges {
		t.Fatalf("plan before apply: exit %d, want 2\n%s", code, stderr)
	}

	var out bytes.Buffer
	cmd := exec.Command(bin, append([]string{"apply", "--auto-approve", l.site}, l.runtimeFlags()...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	child, err := testenv.StartChild(cmd)
	if err != nil {
		t.Fatal(err)
	}
	exited := child.Done()
	// Kill it once the third batch's agents are at work: the canary and
	// batch 2 are done, batch 3 is mid-install.
	deadline := time.Now().Add(30 * time.Second)
	for len(l.fleet.AgentOrder()) < 7 {
		select {
		case <-exited:
			t.Fatalf("metal apply ended before it was killed:\n%s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("agents never started; metal apply said:\n%s", out.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if done := len(l.fleet.Installs()); done >= 16 {
		t.Fatalf("apply finished before it was killed (%d installs)", done)
	}

	resume := exec.Command(bin, append([]string{"apply", "--resume", "--auto-approve", l.site}, l.runtimeFlags()...)...)
	b, err := resume.CombinedOutput()
	if err != nil {
		t.Fatalf("metal apply --resume: %v\n%s\nfirst apply said:\n%s", err, b, out.String())
	}
	if !strings.Contains(string(b), "16 done, 0 failed, 0 not started") {
		t.Errorf("resume summary:\n%s", b)
	}
	want := map[string]int{}
	for _, n := range l.fleet.Names() {
		want[n] = 1
	}
	// Written, not Installs: a done report whose answer the kill cut off
	// is retried and found stale once the resume moved the machine on.
	if d := cmp.Diff(want, l.fleet.Written()); d != "" {
		t.Errorf("images written per machine (-want +got):\n%s", d)
	}
	if code, stdout, stderr := metal(t, nil, "plan", "--detailed-exitcode", l.site); code != 0 || !strings.Contains(stdout, "No changes") {
		t.Errorf("plan after apply: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := metal(t, nil, append([]string{"apply", "--resume", "--auto-approve", l.site}, l.runtimeFlags()...)...); code != exitFailed || !strings.Contains(stderr, "no interrupted apply run") {
		t.Errorf("second resume: exit %d, %s", code, stderr)
	}
}

// TestApplyRefusals: no terminal and no --auto-approve; a destructive plan
// without --allow-destroy; a saved plan whose site file or inventory
// changed; and a saved plan that is current, applied without a question.
func TestApplyRefusals(t *testing.T) {
	l := newApplyLab(t, 3, 0, "  canary = 0\n  stagger = \"0s\"")
	flags := l.runtimeFlags()

	code, _, stderr := metal(t, nil, "apply", l.site)
	if code != exitFailed || !strings.Contains(stderr, "--auto-approve") {
		t.Errorf("apply with no terminal: exit %d, %s", code, stderr)
	}
	if got := l.fleet.Started(); len(got) != 0 {
		t.Errorf("a refused apply booted machines: %v", got)
	}

	planFile := filepath.Join(l.dir, "first.plan")
	if code, _, stderr := metal(t, nil, "plan", "--out", planFile, l.site); code != 0 {
		t.Fatalf("plan --out: exit %d %s", code, stderr)
	}
	// An edited site file makes the saved plan stale.
	orig, _ := os.ReadFile(l.site)
	if err := os.WriteFile(l.site, append(orig, []byte("\n# edited\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := metal(t, nil, append([]string{"apply", planFile}, flags...)...); code != exitFailed || !strings.Contains(stderr, "stale") {
		t.Errorf("apply of a plan whose site changed: exit %d, %s", code, stderr)
	}
	if err := os.WriteFile(l.site, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	// The current saved plan of one target applies without a question.
	one := filepath.Join(l.dir, "one.plan")
	if code, _, stderr := metal(t, nil, "plan", "--out", one, "--target", "m0000", l.site); code != 0 {
		t.Fatalf("plan --out --target: exit %d %s", code, stderr)
	}
	code, stdout, stderr := metal(t, nil, append([]string{"apply", one}, flags...)...)
	if code != 0 || !strings.Contains(stdout, "1 done, 0 failed") {
		t.Fatalf("apply of a current saved plan: exit %d\n%s%s", code, stdout, stderr)
	}
	if d := cmp.Diff(map[string]int{"m0000": 1}, l.fleet.Installs()); d != "" {
		t.Errorf("installs (-want +got):\n%s", d)
	}
	// The first plan predates that apply: the machines changed, and the
	// refusal says which.
	if code, _, stderr := metal(t, nil, append([]string{"apply", planFile}, flags...)...); code != exitFailed || !strings.Contains(stderr, "is stale") || !strings.Contains(stderr, "m0000: planned create, now no-op") {
		t.Errorf("apply of a plan whose inventory changed: exit %d, %s", code, stderr)
	}

	// A new image: a reprovision of m0000: refused without
	// --allow-destroy, nothing touched.
	l.writeSite("  canary = 0\n  stagger = \"0s\"", func(s string) string {
		return strings.ReplaceAll(s, "image   = image.os\n", "image   = image.os2\n")
	})
	code, stdout, stderr = metal(t, nil, append([]string{"apply", "--auto-approve", "--json", l.site}, flags...)...)
	if code != exitFailed || !strings.Contains(stderr, "--allow-destroy") {
		t.Errorf("destructive apply: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = metal(t, nil, append([]string{"apply", "--auto-approve", "--allow-destroy", "--json", l.site}, flags...)...)
	if code != 0 || !strings.Contains(stdout, `"type":"finished"`) {
		t.Fatalf("apply --allow-destroy: exit %d\n%s%s", code, stdout, stderr)
	}
	if d := cmp.Diff(map[string]int{"m0000": 2, "m0001": 1, "m0002": 1}, l.fleet.Installs()); d != "" {
		t.Errorf("installs (-want +got):\n%s", d)
	}
}

// TestApplyWaitsForLeadership: with a shared (etcd) store, an apply waits
// while another holds the site's apply leadership, says so, and goes on
// once it is released.
func TestApplyWaitsForLeadership(t *testing.T) {
	l := newApplyLab(t, 2, 0, "  canary = 0\n  stagger = \"0s\"")
	bin := buildMetal(t)
	ctx := context.Background()
	other, err := l.store.Election("apply")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Campaign(ctx); err != nil {
		t.Fatal(err)
	}

	var out syncbuf.Buffer
	cmd := exec.Command(bin, append([]string{"apply", "--auto-approve", l.site}, l.runtimeFlags()...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	child, err := testenv.StartChild(cmd)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "Another metal apply") {
		select {
		case <-child.Done():
			t.Fatalf("metal apply did not wait for the leader (exit %v):\n%s", child.Wait(), out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("metal apply never said it waits:\n%s", out.String())
		}
	}
	if n := len(l.fleet.Installs()); n != 0 {
		t.Fatalf("%d machines installed while another apply led", n)
	}
	if err := other.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-child.Done():
		if err := child.Wait(); err != nil {
			t.Fatalf("metal apply after the leader resigned: %v\n%s", err, out.String())
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("metal apply did not finish after the leader resigned:\n%s", out.String())
	}
	if n := len(l.fleet.Installs()); n != 2 {
		t.Errorf("%d machines installed, want 2\n%s", n, out.String())
	}
}
