package ipmisim_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
)

// TestExitedQEMUIsOff: a QEMU that dies (a crash, the OOM killer) leaves its
// pid file behind, and, never reaped, stays a zombie; the BMC must call its
// machine off, and a power on must start a new QEMU. (A QEMU that exits
// cleanly removes its pid file, so that case never asked.) The test process
// becomes a child subreaper, so the daemonized QEMU is its child and stays
// a zombie until the test reaps it, whether or not this machine's PID 1
// reaps.
func TestExitedQEMUIsOff(t *testing.T) {
	testpeer.Need(t, "ipmi_sim", "openipmi")
	ipmitool := testpeer.Need(t, "ipmitool", "ipmitool")
	log := testpeer.NewLog(t)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become a child subreaper: %v", err)
	}
	var qemus []int
	t.Cleanup(func() {
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
		// Reap only the QEMUs this test made our children, by pid: a
		// wait for any child would take ipmi_sim from its exec.Cmd.
		for _, pid := range qemus {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, 0, nil)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	files, sim, c := startSim(t, "vm-z", log) // stopped before the reaping above

	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatalf("power on: %v", err)
	}
	pid := sim.QEMUPID()
	if pid == 0 {
		t.Fatal("after power on no QEMU runs")
	}
	qemus = append(qemus, pid)
	if ppid := parent(t, pid); ppid != os.Getpid() {
		t.Fatalf("QEMU %d's parent is %d, not this test (%d): the zombie could be reaped under the test", pid, ppid, os.Getpid())
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for state(t, pid) != 'Z' {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU %d is in state %q 30s after SIGKILL, want a zombie", pid, state(t, pid))
		}
		time.Sleep(20 * time.Millisecond)
	}

	if p, err := c.PowerState(ctx); err != nil || p != bmc.PowerOff {
		t.Errorf("PowerState with QEMU exited (a zombie) = %q, %v; want off", p, err)
	}
	outside(t, ipmitool, sim.Addr(), files.PasswordFile, "Chassis Power is off")
	if got := sim.QEMUPID(); got != 0 {
		t.Errorf("QEMUPID = %d for an exited QEMU, want 0", got)
	}

	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatalf("power on after QEMU died: %v", err)
	}
	next := sim.QEMUPID()
	if next == 0 || next == pid {
		t.Fatalf("power on after QEMU died: QEMU pid %d (the exited one was %d), want a new one", next, pid)
	}
	qemus = append(qemus, next)
	if p, err := c.PowerState(ctx); err != nil || p != bmc.PowerOn {
		t.Errorf("PowerState with a new QEMU = %q, %v; want on", p, err)
	}
}

// stat returns the fields of /proc/PID/stat after the command name, which
// may itself hold spaces and parentheses; "" if the process is gone.
func stat(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		t.Fatalf("/proc/%d/stat: no command name: %q", pid, b)
	}
	return strings.Fields(string(b[i+1:]))
}

// state is the process's state letter (R, S, Z, ...), 0 if it is gone.
func state(t *testing.T, pid int) byte {
	if f := stat(t, pid); len(f) > 0 {
		return f[0][0]
	}
	return 0
}

func parent(t *testing.T, pid int) int {
	f := stat(t, pid)
	if len(f) < 2 {
		t.Fatalf("process %d is gone", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	return ppid
}
