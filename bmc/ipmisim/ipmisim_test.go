package ipmisim_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/ipmisim"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

const password = "sim-pw-Xy7!secret"

// TestIPMISimControlsQEMU starts ipmi_sim with the configuration Write
// produces, controlling a real QEMU, and drives it through the bmc
// package's IPMI path (bmclib → ipmitool) and through Debian's ipmitool:
// power on starts QEMU, power off ends it, and a PXE boot device shows as
// -boot once=n on the next QEMU's command line.
func TestIPMISimControlsQEMU(t *testing.T) {
	testpeer.Need(t, "ipmi_sim", "openipmi")
	ipmitool := testpeer.Need(t, "ipmitool", "ipmitool")
	log := testpeer.NewLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	files, sim, c := startSim(t, "vm1", log)
	for _, secret := range []string{files.PasswordFile, files.LanConf} {
		st, err := os.Stat(secret)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", secret, st.Mode().Perm())
		}
	}
	if p, err := c.PowerState(ctx); err != nil || p != bmc.PowerOff {
		t.Fatalf("PowerState = %q, %v; want off", p, err)
	}

	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatalf("power on: %v", err)
	}
	pid := sim.QEMUPID()
	if pid == 0 || !alive(pid) {
		t.Fatalf("after power on no QEMU runs (pid %d)", pid)
	}
	if args := cmdline(t, pid); strings.Contains(args, "once=") {
		t.Errorf("QEMU started with a boot-once option nobody asked for: %s", args)
	}
	outside(t, ipmitool, sim.Addr(), files.PasswordFile, "Chassis Power is on")

	if err := c.Power(ctx, bmc.ActionOff); err != nil {
		t.Fatalf("power off: %v", err)
	}
	if alive(pid) {
		t.Fatalf("QEMU %d still runs after power off", pid)
	}
	if sim.QEMUPID() != 0 {
		t.Errorf("pid file still names a live QEMU after power off")
	}
	outside(t, ipmitool, sim.Addr(), files.PasswordFile, "Chassis Power is off")

	if err := c.SetBootDevice(ctx, bmc.BootPXE, bmc.BootOptions{}); err != nil {
		t.Fatalf("boot device: %v", err)
	}
	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatalf("power on after bootdev: %v", err)
	}
	pid = sim.QEMUPID()
	if pid == 0 {
		t.Fatal("after power on no QEMU runs")
	}
	if args := cmdline(t, pid); !strings.Contains(args, "-boot once=n") {
		t.Errorf("QEMU's command line lacks -boot once=n after bootdev pxe: %s", args)
	}

	// Cycle: a new QEMU, and the PXE choice was for one boot only.
	if err := c.Power(ctx, bmc.ActionCycle); err != nil {
		t.Fatalf("power cycle: %v", err)
	}
	if p, err := c.PowerState(ctx); err != nil || p != bmc.PowerOn {
		t.Fatalf("after cycle PowerState = %q, %v; want on", p, err)
	}
	if next := sim.QEMUPID(); next == 0 || next == pid {
		t.Errorf("after cycle QEMU pid = %d, want a new process (was %d)", next, pid)
	} else if args := cmdline(t, next); strings.Contains(args, "once=") {
		t.Errorf("the PXE boot device outlived one boot: %s", args)
	}

	if strings.Contains(log.String(), password) || strings.Contains(sim.Output(), password) {
		t.Error("the BMC password appears in a log")
	}
	if b, _ := os.ReadFile(files.ChassisLog); strings.Contains(string(b), password) {
		t.Error("the BMC password appears in the chassis log")
	}
}

// startSim runs ipmi_sim for a machine name whose power is a QEMU, until
// the test ends, and returns a bmc client for it over IPMI.
func startSim(t *testing.T, name string, log *testpeer.Log) (ipmisim.Files, *ipmisim.Process, *bmc.Client) {
	t.Helper()
	files, sim := testpeer.RunIPMISim(t, ipmisim.Config{
		Name: name, Username: "admin", Password: password,
		QEMU: testpeer.QEMUCommand(t), Log: log.Logger,
	})
	c, err := bmc.New(bmc.Config{
		Machine: name, Protocol: bmc.ProtocolIPMI, Address: sim.Addr(),
		Username: "admin", Password: password,
		Timeout: 10 * time.Second, PowerWait: 10 * time.Second,
	}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	return files, sim, c
}

// outside runs Debian's ipmitool against the simulator, password from the
// file Write made, and expects want in its answer.
func outside(t *testing.T, ipmitool, addr, passwordFile, want string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command(ipmitool, "-I", "lanplus", "-C", "3", "-H", host, "-p", port,
		"-U", "admin", "-f", passwordFile, "chassis", "power", "status").CombinedOutput()
	if err != nil || !strings.Contains(string(out), want) {
		t.Errorf("ipmitool chassis power status: %v: %s (want %q)", err, out, want)
	}
}

func alive(pid int) bool {
	// A zombie is dead for our purposes; QEMU daemonized, so it is not
	// our child and is reaped by init.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

func cmdline(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatalf("read QEMU %d command line: %v", pid, err)
	}
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}

// TestWriteRejectsBadCredentials: Write says what is wrong with a password
// without echoing it.
func TestWriteRejectsBadCredentials(t *testing.T) {
	bad := `has"quote-secret`
	_, err := ipmisim.Write(t.TempDir(), ipmisim.Config{Username: "admin", Password: bad, QEMU: []string{"true"}, IPMISim: "/bin/true"})
	if err == nil || strings.Contains(err.Error(), bad) {
		t.Errorf("Write with a quoted password = %v; want an error that does not show it", err)
	}
}

// TestSOLToQEMUSerial: the machine's serial line wired as the lab wires
// its IPMI VM's: QEMU serves its serial port on a loopback TCP socket and
// ipmi_sim's Serial-over-LAN connects to it. A VM powered on through the
// BMC boots a kernel whose console answers each line it reads; over SOL
// its answers arrive, so keys typed at the BMC reach the machine and its
// output comes back. ipmi_sim connects to the line every 10 s until it
// is there, so the test types until the machine answers.
func TestSOLToQEMUSerial(t *testing.T) {
	testenv.Integration(t, "QEMU")
	if err := bootkit.CheckQEMU(bootkit.BIOS); err != nil {
		t.Fatal(err)
	}
	log := testpeer.NewLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	kernel, err := bootkit.Kernel(ctx, bootkit.CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const marker = "metal-sol-qemu-serial-up"
	img, err := bootkit.EchoInitramfs(marker)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd")
	if err := os.WriteFile(initrd, img, 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(dir, "serial.log")
	line := "127.0.0.1:" + strconv.Itoa(port)
	_, sim := testpeer.RunIPMISim(t, ipmisim.Config{
		Name: "sol-vm", Username: "admin", Password: password, SOL: "tcp:" + line,
		QEMU: bootkit.DirectBoot(qemutest.Accel(t), 256, kernel, initrd,
			"socket,id=ser0,host=127.0.0.1,port="+strconv.Itoa(port)+",server=on,wait=off,logfile="+serial),
		Log: log.Logger,
	})
	c, err := bmc.New(bmc.Config{
		Machine: "sol-vm", Protocol: bmc.ProtocolIPMI, Address: sim.Addr(),
		Username: "admin", Password: password, Timeout: 20 * time.Second, PowerWait: 10 * time.Second,
	}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatalf("power on: %v", err)
	}
	if err := bootkit.WaitForMarker(ctx, serial, marker, nil); err != nil {
		b, _ := os.ReadFile(serial)
		t.Fatalf("%v; serial:\n%s", err, b)
	}
	con, err := c.SerialConsole(ctx, bmc.ConsoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	out := &syncbuf.Buffer{}
	go func() { _, _ = io.Copy(out, con) }()
	want := bootkit.EchoPrefix + "typed-over-sol"
	for deadline := time.Now().Add(time.Minute); !strings.Contains(out.String(), want); time.Sleep(2 * time.Second) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(serial)
			t.Fatalf("no %q over SOL in a minute; SOL showed %q; the serial log:\n%s", want, out.String(), b)
		}
		if _, err := con.Write([]byte("typed-over-sol\r")); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(serial); !strings.Contains(string(b), want) {
		t.Errorf("the VM's own serial log lacks %q", want)
	}
}
