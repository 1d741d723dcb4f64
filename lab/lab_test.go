package lab_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/lab"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// requireLab skips nothing: the lab is metal's main end-to-end test, so a
// machine without its tools fails with what to install.
func requireLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the lab needs root (network namespaces); run the tests as root (make test does)")
	}
	for _, tool := range [][2]string{
		{"ip", "iproute2"}, {"qemu-system-x86_64", "qemu-system-x86"}, {"ipmi_sim", "openipmi"},
		{"ipmitool", "ipmitool"}, {"go", "golang (Go at /usr/local/go/bin)"},
	} {
		pxetest.RequireTool(t, tool[0], tool[1])
	}
}

// buildMetal builds the static metal binary the lab runs as BMC, server,
// apply and install agent.
func buildMetal(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "metal")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/metal")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build metal: %v\n%s", err, out)
	}
	return bin
}

// labDir is a short directory for the lab (its VMs' Unix sockets must fit
// in 107 bytes), kept with every log when the test fails.
func labDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "metal-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the lab's logs, serial consoles and state are kept in %s (logs/, vms/*/serial.log, state/)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// syncLog is a concurrency-safe buffer for the lab's own log.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// upLab makes a lab of two VMs (vm-1 BIOS behind ipmi_sim, vm-2 UEFI behind
// Redfish) and registers its removal, with the check that removal leaves
// nothing behind.
func upLab(t *testing.T, ctx context.Context, dir, metal string, image func(context.Context, string) error) *lab.State {
	t.Helper()
	logs := &syncLog{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := lab.Up(ctx, lab.Config{Dir: dir, Machines: 2, UEFI: 1, Metal: metal, BuildImage: image, Log: log})
	if err != nil {
		t.Fatalf("lab up: %v\nlab log:\n%s", err, logs)
	}
	t.Cleanup(func() {
		downAndCheck(t, st)
		if t.Failed() {
			t.Logf("lab log:\n%s", logs)
		}
	})
	return st
}

// downAndCheck removes the lab and checks nothing of it is left: no
// namespace, no process it recorded, no VM.
func downAndCheck(t *testing.T, st *lab.State) {
	t.Helper()
	if err := lab.Down(context.Background(), st.Dir, nil); err != nil {
		t.Errorf("lab down: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", st.Netns)); err == nil {
		t.Errorf("namespace %s is left after down", st.Netns)
	}
	for _, p := range st.Procs {
		if p.Running() {
			t.Errorf("%s (pid %d) still runs after down", p.Name, p.PID)
		}
	}
	out, _ := exec.Command("pgrep", "-f", st.Dir).Output()
	if pids := strings.Fields(string(out)); len(pids) > 0 {
		t.Errorf("processes naming the lab's directory still run after down: %v", pids)
	}
	if _, err := os.Stat(filepath.Join(st.Dir, lab.StateFile)); err == nil {
		t.Errorf("%s is left after down", lab.StateFile)
	}
}

// inLab runs metal (or another command) inside the lab's namespace.
func inLab(ctx context.Context, st *lab.State, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", st.Netns, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// events reads each machine's events from the lab's store (no metal may
// hold it).
func events(t *testing.T, st *lab.State) map[string][]inventory.Event {
	t.Helper()
	ctx := context.Background()
	store, err := backend.Open(ctx, st.StoreURL(), backend.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open the lab's store: %v", err)
	}
	defer store.Close()
	out := map[string][]inventory.Event{}
	for _, vm := range st.VMs {
		evs, err := store.Events(ctx, inventory.EventQuery{Machine: vm.Name})
		if err != nil {
			t.Fatal(err)
		}
		out[vm.Name] = evs
	}
	return out
}

// alive reports whether pid is a process that has not exited: a zombie
// waiting for init to reap it has.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z' && b[i+2] != 'X'
}

// leased reports whether metal serve's log shows vm leasing its address.
func leased(serveLog string, vm lab.VM) bool {
	b, _ := os.ReadFile(serveLog)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "msg=lease") && strings.Contains(line, "mac="+vm.MAC) && strings.Contains(line, "ip="+vm.IP+" ") {
			return true
		}
	}
	return false
}

func serialLogs(st *lab.State) string {
	var b strings.Builder
	for _, vm := range st.VMs {
		out, _ := os.ReadFile(vm.Serial)
		fmt.Fprintf(&b, "--- %s serial (%s):\n%s\n", vm.Name, vm.Serial, out)
	}
	return b.String()
}

// TestLabNetboot makes a lab, powers both VMs on through their BMCs (IPMI
// and Redfish) with metal bmc inside the lab, and checks that each VM's
// firmware (SeaBIOS and OVMF, with the NIC's iPXE ROM) leased its address
// from the lab's metal serve; that a console attaches; that a lab
// whose BMCs crashed is cleaned by the next up; and that down removes it
// all.
func TestLabNetboot(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := labDir(t)
	metal := buildMetal(t, t.TempDir())
	image := func(_ context.Context, path string) error {
		// No image is written by this test: it stops at the netboot.
		return os.WriteFile(path, make([]byte, 1<<20), 0o644)
	}
	st := upLab(t, ctx, dir, metal, image)

	out, err := inLab(ctx, st, metal, "bmc", "on", "--site", st.Site)
	if err != nil {
		t.Fatalf("metal bmc on: %v\n%s", err, out)
	}
	// The UEFI VM's console, attached at once: OVMF and iPXE print on it.
	uefi := st.VMs[1]
	console := &syncLog{}
	keys, typed := io.Pipe()
	attached := make(chan error, 1)
	go func() { attached <- lab.Attach(ctx, uefi.Console, keys, console) }()

	// Each VM's firmware (iPXE ROM under SeaBIOS and under OVMF) asks
	// metal's DHCP and gets its reserved address. With no apply run yet
	// there is nothing to boot, and the answer says so.
	serveLog := filepath.Join(dir, "logs", "serve.log")
	deadline := time.Now().Add(3 * time.Minute)
	for _, vm := range st.VMs {
		for !leased(serveLog, vm) {
			if time.Now().After(deadline) {
				t.Fatalf("%s (%s) got no lease of %s from metal serve (%s)\n%s", vm.Name, vm.Firmware, vm.IP, serveLog, serialLogs(st))
			}
			time.Sleep(time.Second)
		}
	}
	typed.Write([]byte{lab.EscapeByte})
	if err := <-attached; !errors.Is(err, lab.ErrEscaped) {
		t.Errorf("console of %s: %v, want it detached by Ctrl-]", uefi.Name, err)
	}
	if !strings.Contains(console.String(), uefi.MAC) {
		t.Errorf("console of %s did not show iPXE configuring its NIC %s:\n%s", uefi.Name, uefi.MAC, console)
	}
	status := st.Status(ctx)
	for _, vm := range status.VMs {
		if !vm.Running {
			t.Errorf("status: %s is not running after power on", vm.Name)
		}
	}
	if status.StoreError == "" {
		t.Error("status read the store while metal serve holds it")
	}

	// A crash: the BMCs die without stopping their VMs. The next up must
	// clean the orphaned VMs and make a working lab in the same place.
	var orphans []int
	for _, vm := range status.VMs {
		orphans = append(orphans, vm.PID)
	}
	for _, p := range st.Procs {
		syscall.Kill(p.PID, syscall.SIGKILL)
	}
	st2 := upLab(t, ctx, dir, metal, image)
	for _, pid := range orphans {
		if alive(pid) {
			t.Errorf("the VM of the crashed lab (pid %d) still runs after the next up", pid)
		}
	}
	if out, err := inLab(ctx, st2, metal, "bmc", "status", "--site", st2.Site); err != nil || strings.Count(out, " off ") != 2 {
		t.Errorf("the second lab's BMCs: %v\n%s", err, out)
	}
}
