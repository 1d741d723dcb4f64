package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/metal-dev/metal/internal/procstat"
)

// Proc is a long-lived process the lab started (a BMC, metal serve). It is
// recorded with its start time so that a later `lab down` stops it only if
// the pid still names the same process, never one that reused the pid.
type Proc struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // /proc/PID/stat starttime, in clock ticks since boot
	Log   string `json:"log"`
}

// startDetached runs prog inside namespace ns (through `ip netns exec`,
// which execs it, so the pid is prog's) in a session of its own, with
// stdin from /dev/null and its output appended to logPath. It outlives the
// caller: `metal lab up` returns while the lab runs.
func startDetached(ns, name, logPath string, env []string, prog string, args ...string) (Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return Proc{}, fmt.Errorf("%s log: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, prog}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	// A session of its own: a Ctrl-C at the terminal that ran `lab up`, or
	// the end of that terminal, does not reach the lab.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Proc{}, fmt.Errorf("start %s: %w", name, err)
	}
	// Reap it if it dies while the caller still runs (a long-lived caller
	// such as a test would otherwise keep a zombie that looks alive).
	go func() { _ = cmd.Wait() }()
	start, err := procStart(cmd.Process.Pid)
	if err != nil {
		return Proc{}, fmt.Errorf("start %s: %w", name, err)
	}
	return Proc{Name: name, PID: cmd.Process.Pid, Start: start, Log: logPath}, nil
}

// procStat returns a process's state letter and start time.
func procStat(pid int) (state byte, start uint64, err error) {
	st, err := procstat.Read(pid)
	return st.State, st.StartTime, err
}

func procStart(pid int) (uint64, error) {
	_, start, err := procStat(pid)
	return start, err
}

// running reports whether pid is a live (not zombie) process whose start
// time is start.
func running(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, s, err := procStat(pid)
	return err == nil && s == start && st != 'Z' && st != 'X'
}

// Running reports whether the process is still the one the lab started.
func (p Proc) Running() bool { return running(p.PID, p.Start) }

// stop ends the process if it is still ours: SIGTERM, so BMCs stop their
// VMs and metal closes its store, then SIGKILL after grace.
func (p Proc) stop(grace time.Duration) error {
	return stopPID(p.PID, p.Start, grace)
}

func stopPID(pid int, start uint64, grace time.Duration) error {
	if !running(pid, start) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !running(pid, start) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	for i := 0; i < 100 && running(pid, start); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if running(pid, start) {
		return fmt.Errorf("process %d did not exit after SIGKILL", pid)
	}
	return nil
}

// pidFileProc returns the pid and start time of the QEMU that wrote
// pidFile, or 0 when none runs. The pid counts only if its command line
// names the pid file: a reused pid belongs to someone else.
func pidFileProc(pidFile string) (int, uint64) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("\x00"+pidFile+"\x00")) {
		return 0, 0
	}
	st, start, err := procStat(pid)
	if err != nil || st == 'Z' || st == 'X' {
		return 0, 0
	}
	return pid, start
}
