package lab_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/serialterm"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/lab"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// requireLab skips nothing: the lab is metal's main end-to-end test, so a
// machine without its tools fails with what to install.
func requireLab(t *testing.T) {
	t.Helper()
	testenv.Root(t, "the lab (network namespaces, QEMU)")
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

// metalBuild is the metal binary the package's tests share: built once,
// removed by TestMain.
var metalBuild struct {
	once      sync.Once
	dir, path string
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if metalBuild.dir != "" {
		os.RemoveAll(metalBuild.dir)
	}
	os.Exit(code)
}

// buildMetal builds the static metal binary the lab runs as BMC, server,
// apply and install agent, once for every test that needs it.
func buildMetal(t *testing.T) string {
	t.Helper()
	metalBuild.once.Do(func() {
		metalBuild.dir, metalBuild.err = os.MkdirTemp("", "metal-lab-bin-")
		if metalBuild.err != nil {
			return
		}
		metalBuild.path, metalBuild.err = testenv.BuildMetal(metalBuild.dir)
	})
	if metalBuild.err != nil {
		t.Fatal(metalBuild.err)
	}
	return metalBuild.path
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

// upLab makes a lab of two VMs (vm-1 BIOS behind ipmi_sim, vm-2 UEFI behind
// Redfish) and registers its removal, with the check that removal leaves
// nothing behind.
func upLab(t *testing.T, ctx context.Context, dir, metal string, image func(context.Context, string) error) *lab.State {
	t.Helper()
	return upLabWith(t, ctx, lab.Config{Dir: dir, Machines: 2, UEFI: 1, Metal: metal, BuildImage: image})
}

// upLabWith makes the lab c describes (its Log is the test's) and registers
// its removal, with the check that removal leaves nothing behind.
func upLabWith(t *testing.T, ctx context.Context, c lab.Config) *lab.State {
	t.Helper()
	logs := &syncbuf.Buffer{}
	c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := lab.Up(ctx, c)
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
	out, _ := exec.Command("pgrep", "-f", st.Dir+"/").Output()
	if pids := strings.Fields(string(out)); len(pids) > 0 {
		t.Errorf("processes naming the lab's directory still run after down: %v", pids)
	}
	if _, err := os.Stat(filepath.Join(st.Dir, lab.StateFile)); err == nil {
		t.Errorf("%s is left after down", lab.StateFile)
	}
}

// inLab runs metal (or another command) inside the lab's namespace.
func inLab(ctx context.Context, st *lab.State, name string, args ...string) (string, error) {
	out, err := groupCommand(ctx, "ip", append([]string{"netns", "exec", st.Netns, name}, args...)...).CombinedOutput()
	return string(out), err
}

// vmPowerOff reports whether `metal bmc status` output says name is off.
func vmPowerOff(out, name string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == name {
			return slices.Contains(f, "off")
		}
	}
	return false
}

// groupCommand is a command in a process group of its own, all of which
// ctx's end kills: `metal lab apply` runs `metal apply` as a child, which
// would outlive it and hold the output pipe open.
func groupCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
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

func serialLogs(st *lab.State) string {
	var b strings.Builder
	for _, vm := range st.VMs {
		out, _ := os.ReadFile(vm.Serial)
		fmt.Fprintf(&b, "--- %s serial (%s):\n%s\n", vm.Name, vm.Serial, out)
	}
	return b.String()
}

// TestLab is the lab end to end, as `make lab` runs it: up with two VMs
// (vm-1 BIOS behind ipmi_sim, vm-2 UEFI behind Redfish), `metal lab apply`
// provisions both at once (power on through the BMC, PXE, install agent,
// image written, reboot), both reach provisioned in the store and boot
// their disk (the image's marker on their serial consoles); powered on
// again, both consoles show the marker through metal serve's console hub
// (vm-1's over its BMC's Serial-over-LAN); plan shows a BIOS change and a
// firmware update for vm-2, apply makes them and the next plan is empty
// (hardwareAsCode); a lab whose BMCs crashed is cleaned by the next up; down
// leaves no namespace, tap or process.
func TestLab(t *testing.T) {
	requireLab(t)
	// Beside the disaster-recovery drill: each lab has its own directory
	// and so its own namespace.
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dir := labDir(t)
	metal := buildMetal(t)
	st := upLab(t, ctx, dir, metal, nil)

	out, err := groupCommand(ctx, metal, "lab", "apply", "--dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("metal lab apply: %v\n%s\n%s", err, out, serialLogs(st))
	}
	for _, vm := range st.VMs {
		wait, stop := context.WithTimeout(ctx, 3*time.Minute)
		err := bootkit.WaitForMarker(wait, vm.Serial, lab.Marker, nil)
		stop()
		if err != nil {
			t.Errorf("%s (%s) did not boot its disk: %v", vm.Name, vm.Firmware, err)
		}
	}
	if t.Failed() {
		t.Fatalf("apply:\n%s\n%s", out, serialLogs(st))
	}

	// The machines' state, from the store once serve lets go of it.
	st, err = lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.StopServe(); err != nil {
		t.Fatal(err)
	}
	for _, vm := range st.Status(ctx).VMs {
		if vm.State != string(inventory.StateProvisioned) {
			t.Errorf("%s is %q in the store, want provisioned", vm.Name, vm.State)
		}
	}
	labConsoleWithoutServe(t, ctx, metal, dir)
	if _, err := st.StartServe(ctx, metal, 5*time.Minute); err != nil {
		t.Fatal(err)
	}

	// The consoles, as metal lab console opens them while serve runs:
	// through serve's console hub, vm-1's over its BMC's Serial-over-LAN
	// (ipmi_sim's SOL is the one client of its serial line), vm-2's over
	// its console socket. Each VM is powered on again through its BMC,
	// boots its disk, and its marker comes through.
	consoles := make(chan error, len(st.VMs))
	for _, vm := range st.VMs {
		go func() { consoles <- consoleShowsMarker(ctx, st, metal, &vm) }()
	}
	for range st.VMs {
		if err := <-consoles; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Hardware as code on the provisioned vm-2, through its virtual BMC.
	hardwareAsCode(t, ctx, st, metal)

	// A crash: the BMCs and serve die without stopping anything. The next
	// up cleans what is left and makes a working lab in the same place.
	var orphans []int
	for _, vm := range st.Status(ctx).VMs {
		if vm.Running {
			orphans = append(orphans, vm.PID)
		}
	}
	for _, p := range st.Procs {
		syscall.Kill(p.PID, syscall.SIGKILL)
	}
	st2 := upLab(t, ctx, dir, metal, nil)
	for _, pid := range orphans {
		if alive(pid) {
			t.Errorf("a VM of the crashed lab (pid %d) still runs after the next up", pid)
		}
	}
	if out, err := inLab(ctx, st2, metal, "bmc", "status", "--site", st2.Site); err != nil || strings.Count(out, " off ") != 2 {
		t.Errorf("the second lab's BMCs: %v\n%s", err, out)
	}
}

// consoleShowsMarker powers vm on again through its BMC once it is off
// (the lab's image powers its VM off after phoning home) and watches its
// console through the lab's metal serve until the image's marker shows.
func consoleShowsMarker(ctx context.Context, st *lab.State, metal string, vm *lab.VM) error {
	bmcLog := filepath.Join(st.Dir, "logs", "vbmc.log")
	if vm.Protocol == lab.IPMI {
		bmcLog = filepath.Join(st.Dir, "logs", "ipmi_sim-"+vm.Name+".log")
	}
	// Not before it is off: a power-on would find it still on, do
	// nothing, and the VM would then go off by itself.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		out, err := inLab(ctx, st, metal, "bmc", "status", "--site", st.Site, vm.Name)
		if err == nil && vmPowerOff(out, vm.Name) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s never powered off after booting its disk: %v\n%s\nBMC log:\n%s", vm.Name, err, out, tailFile(bmcLog))
		}
	}
	powered := make(chan error, 1)
	go func() {
		out, err := inLab(ctx, st, metal, "bmc", "on", "--site", st.Site, vm.Name)
		if err != nil {
			err = fmt.Errorf("metal bmc on %s: %w\n%s", vm.Name, err, out)
		}
		powered <- err
	}()
	// Attach as soon as the console is there, before the firmware is
	// through, so that the marker is not missed.
	var conn io.ReadWriteCloser
	for start := time.Now(); conn == nil; time.Sleep(20 * time.Millisecond) {
		c, via, err := st.Console(ctx, vm)
		switch {
		case err == nil && !strings.Contains(via, "metal serve"):
			c.Close()
			return fmt.Errorf("console of %s %s, not through the lab's metal serve", vm.Name, via)
		case err == nil:
			conn = c
		case time.Since(start) > time.Minute:
			return fmt.Errorf("console of %s: %w\nBMC log:\n%s", vm.Name, err, tailFile(bmcLog))
		}
	}
	defer conn.Close()
	console := &syncbuf.Buffer{}
	go func() { _, _ = io.Copy(console, conn) }()
	if err := <-powered; err != nil {
		return err
	}
	for deadline := time.Now().Add(3 * time.Minute); !strings.Contains(console.String(), lab.Marker); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			serial, _ := os.ReadFile(vm.Serial)
			return fmt.Errorf("the console of %s never showed %s through metal serve:\n%s\nits serial log:\n%s", vm.Name, lab.Marker, console, serial)
		}
	}
	return nil
}

// labConsoleWithoutServe: with no metal serve, metal lab console opens
// vm-1's console, whose serial line only its BMC reaches, over SOL with
// metal console inside the lab's namespace, and Ctrl-] leaves it.
func labConsoleWithoutServe(t *testing.T, ctx context.Context, metal, dir string) {
	t.Helper()
	cmd := groupCommand(ctx, metal, "lab", "console", "--dir", dir, "vm-1")
	keys, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); !strings.Contains(out.String(), "Connected to vm-1's serial console"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = cmd.Cancel()
			_ = cmd.Wait()
			t.Fatalf("metal lab console vm-1 without serve did not connect in a minute:\n%s", out)
		}
	}
	if _, err := keys.Write([]byte{serialterm.EscapeByte}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("metal lab console vm-1 without serve: %v\n%s", err, out)
	}
	for _, want := range []string{"opening it with metal console inside the lab", "Detached."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("metal lab console vm-1 without serve lacks %q:\n%s", want, out)
		}
	}
}
