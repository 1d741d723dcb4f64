package main

import (
	"bufio"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
)

// serveLab is a simulated fleet served by a running `metal serve` that
// holds an embedded (bbolt) store: the case where `metal apply` must hand
// its run to the daemon, since it can open neither the store nor the ports.
type serveLab struct {
	t     *testing.T
	bin   string
	dir   string
	site  string
	state string
	fleet *applytest.Fleet
	serve *exec.Cmd
	out   *syncbuf.Buffer
}

// newServeLab starts the fleet and metal serve, with serveArgs before the
// site file, and returns once serve answers on its local socket.
func newServeLab(t *testing.T, n int, agentTime time.Duration, rollout string, serveArgs ...string) *serveLab {
	t.Helper()
	return newServeLabEdit(t, n, agentTime, rollout, nil, serveArgs...)
}

// newServeLabEdit is newServeLab with the site file edited first.
func newServeLabEdit(t *testing.T, n int, agentTime time.Duration, rollout string, edit func(string) string, serveArgs ...string) *serveLab {
	t.Helper()
	l := &serveLab{t: t, bin: buildMetal(t), dir: t.TempDir(), out: &syncbuf.Buffer{}}
	listen := freeTCPAddr(t)
	stateDir := filepath.Join(l.dir, "state")
	l.state = "file://" + filepath.Join(stateDir, "metal.db")
	// No Store: the agents learn their task from metal's HTTP server
	// alone, as real agents do.
	f, err := applytest.Start(applytest.Options{Machines: n, Racks: 2, AgentTime: agentTime,
		AgentURL: "http://" + listen, TokenKey: filepath.Join(stateDir, "token.key")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	l.fleet = f
	l.site = filepath.Join(l.dir, "site.hcl")
	l.writeSite(rollout, edit)

	// The API on a port of its own: the default 127.0.0.1:9090 is the host's,
	// shared with every other test package running at the same time.
	args := append([]string{"serve", "--api-listen", "127.0.0.1:0", "--listen", listen, "--tftp-addr", "127.0.0.1:0",
		"--agent-kernel", "/agent/vmlinuz", "--agent-initrd", "/agent/initrd.img"}, serveArgs...)
	l.serve = exec.Command(l.bin, append(args, l.site)...)
	l.serve.Stdout, l.serve.Stderr = l.out, l.out
	serve, err := testenv.StartChild(l.serve)
	if err != nil {
		t.Fatal(err)
	}
	exited := serve.Done()
	t.Cleanup(func() {
		_ = l.serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = l.serve.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("metal serve said:\n%s", l.out.String())
		}
	})
	// Ready once serve says every listener is up (its API's too, which a
	// test may dial next) and its local socket answers: the socket alone
	// can answer before the API listener is bound, and a test that dialled
	// the API then was refused (TestLabConsoleThroughServe in a CI run).
	sock := filepath.Join(stateDir, daemon.LocalSocket)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if strings.Contains(l.out.String(), daemon.ReadyMessage) {
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("metal serve exited:\n%s", l.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("metal serve not ready (every listener up, local socket %s answering) within 60 s:\n%s", sock, l.out.String())
		}
	}
	return l
}

func (l *serveLab) writeSite(rollout string, edit func(string) string) {
	writeFleetSite(l.t, l.fleet, l.site, l.state, rollout, edit)
}

var applyTimeouts = []string{"--step-timeout", "10s", "--agent-timeout", "30s"}

// TestApplySubmittedToServe: with `metal serve` holding the site's bbolt
// store, `metal plan` reads through the daemon and `metal apply` hands the
// run to it, showing the daemon's progress; an edited site file is
// reloaded by the daemon first; a network change is refused with what to
// do; --json streams the engine's events.
func TestApplySubmittedToServe(t *testing.T) {
	l := newServeLab(t, 6, 50*time.Millisecond, testRollout)

	code, stdout, stderr := metal(t, nil, "plan", "--detailed-exitcode", l.site)
	if code != exitChanges || !strings.Contains(stdout, "6 to provision") {
		t.Fatalf("plan beside metal serve: exit %d\n%s%s", code, stdout, stderr)
	}

	code, stdout, stderr = metal(t, nil, append([]string{"apply", "--auto-approve", l.site}, applyTimeouts...)...)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "the apply runs there") || !strings.Contains(stdout, "6 done, 0 failed") {
		t.Errorf("apply did not say it ran in metal serve, or not all done:\n%s%s", stdout, stderr)
	}
	want := map[string]int{}
	for _, n := range l.fleet.Names() {
		want[n] = 1
	}
	if d := cmp.Diff(want, l.fleet.Installs()); d != "" {
		t.Errorf("installs (-want +got):\n%s", d)
	}
	if code, stdout, _ := metal(t, nil, "plan", "--detailed-exitcode", l.site); code != 0 {
		t.Errorf("plan after apply: exit %d, want 0\n%s", code, stdout)
	}

	// An edited site: a label changes. The daemon reloads the file and
	// updates the machine without reinstalling it.
	l.writeSite(testRollout, func(s string) string {
		return strings.Replace(s, `rack = "r0"`, `rack = "r9"`, 1)
	})
	code, stdout, stderr = metal(t, nil, append([]string{"apply", "--auto-approve", "--json", l.site}, applyTimeouts...)...)
	if code != 0 {
		t.Fatalf("apply of the edited site: exit %d\n%s%s", code, stdout, stderr)
	}
	var finished *apply.Result
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var e apply.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("--json line %q: %v", sc.Text(), err)
		}
		if e.Type == "finished" {
			finished = e.Result
		}
	}
	if finished == nil || finished.State != "done" || len(finished.Done) != 1 {
		t.Errorf("the edited site's run: %+v\n%s", finished, stdout)
	}
	if d := cmp.Diff(want, l.fleet.Installs()); d != "" {
		t.Errorf("a label change reinstalled machines (-want +got):\n%s", d)
	}
	if !strings.Contains(l.out.String(), "site reloaded") {
		t.Errorf("metal serve did not log the reload:\n%s", l.out.String())
	}

	// What serve only takes at start is refused, with what to do.
	l.writeSite(testRollout, func(s string) string {
		return strings.Replace(s, `subnet = "192.0.2.0/24"`, `subnet = "198.51.100.0/24"`, 1)
	})
	code, stdout, stderr = metal(t, nil, append([]string{"apply", "--auto-approve", l.site}, applyTimeouts...)...)
	if code != exitFailed || !strings.Contains(stderr, "restart metal serve") {
		t.Errorf("apply of a network change: exit %d\n%s%s", code, stdout, stderr)
	}
	// Flags for in-process servers make no sense here and are refused.
	code, _, stderr = metal(t, nil, "apply", "--auto-approve", "--listen", "127.0.0.1:1", l.site)
	if code != exitUsage || !strings.Contains(stderr, "--listen") {
		t.Errorf("apply --listen beside metal serve: exit %d\n%s", code, stderr)
	}
}

// TestApplySubmittedInterrupt: Ctrl-C of the `metal apply` that submitted
// a run drains it in the daemon (machines in flight finish, no new ones
// start), and `metal apply --resume` finishes it; killing the submitting
// process also only drains the run.
func TestApplySubmittedInterrupt(t *testing.T) {
	l := newServeLab(t, 8, 400*time.Millisecond, testRollout)
	rounds := []struct {
		sig   syscall.Signal
		image string // the image every machine gets: a new one reprovisions all
		want  int    // installs of each machine after the round
	}{
		{syscall.SIGINT, "os", 1},
		{syscall.SIGKILL, "os2", 2},
	}
	for _, r := range rounds {
		l.writeSite(testRollout, func(s string) string {
			return strings.ReplaceAll(s, "image   = image.os\n", "image   = image."+r.image+"\n")
		})
		var out syncbuf.Buffer
		cmd := exec.Command(l.bin, append([]string{"apply", "--auto-approve", "--allow-destroy", l.site}, applyTimeouts...)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		before := len(l.fleet.AgentOrder())
		deadline := time.Now().Add(60 * time.Second)
		for len(l.fleet.AgentOrder()) <= before+1 {
			select {
			case <-exited:
				t.Fatalf("apply ended before it was interrupted:\n%s", out.String())
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatalf("no agent started:\n%s", out.String())
			}
		}
		_ = cmd.Process.Signal(r.sig)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("apply did not end after %v:\n%s", r.sig, out.String())
		}
		if r.sig == syscall.SIGINT {
			if !strings.Contains(out.String(), "interrupted") || cmd.ProcessState.ExitCode() != exitFailed {
				t.Errorf("after Ctrl-C the run should end interrupted, exit %d:\n%s", cmd.ProcessState.ExitCode(), out.String())
			}
		}
		// Resume, once the drained run has ended in the daemon.
		deadline = time.Now().Add(60 * time.Second)
		for {
			code, stdout, stderr := metal(t, nil, append([]string{"apply", "--resume", "--auto-approve", "--allow-destroy", l.site}, applyTimeouts...)...)
			if code == 0 {
				break
			}
			if !strings.Contains(stderr, "under way") || time.Now().After(deadline) {
				t.Fatalf("resume after %v: exit %d\n%s%s", r.sig, code, stdout, stderr)
			}
			time.Sleep(200 * time.Millisecond)
		}
		got := l.fleet.Installs()
		for _, n := range l.fleet.Names() {
			if got[n] != r.want {
				t.Errorf("after %v and resume, %s installed %d times, want %d", r.sig, n, got[n], r.want)
			}
		}
		if code, stdout, _ := metal(t, nil, "plan", "--detailed-exitcode", l.site); code != 0 {
			t.Errorf("plan after the resumed run: exit %d, want 0\n%s", code, stdout)
		}
	}
}
