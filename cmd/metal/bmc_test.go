package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/metal-dev/metal/internal/testenv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/ipmisim"
	"github.com/metal-dev/metal/bmc/virtual"
	qemuhost "github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestBMCVerbs drives a real QEMU through metal's virtual Redfish BMC with
// `metal bmc`, beside a machine whose BMC refuses connections: the
// reachable machine is powered on and off, the other fails alone with a
// clear error, and the exit status says something failed.
func TestBMCVerbs(t *testing.T) {
	qemu := pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	// Paused from the start (-S): the virtual BMC reports it as off.
	vm := exec.Command(qemu, "-nodefaults", "-display", "none", "-m", "32", "-S",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Process.Kill(); vm.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	const password = "vbmc-pw-7731"
	m, err := virtual.NewQEMU(virtual.QEMUConfig{Name: "vm1", QMPSocket: sock})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := virtual.NewServer(virtual.Options{Username: "admin", Password: password},
		virtual.MachineSpec{Name: "vm1", Machine: m, Manufacturer: "QEMU", Serial: "VM1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.Serve(ctx, ln, nil)

	// A port nothing listens on, for the BMC that is down.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	sitePath := filepath.Join(dir, "site.hcl")
	siteHCL := fmt.Sprintf(`
site "bmc" {}
variable "pw" { sensitive = true }
network "lab" {
  interface = "lo"
  subnet    = "192.0.2.0/24"
}
machine "vm1" {
  mac = "52:54:00:00:00:01"
  bmc {
    address  = "http://%s"
    username = "admin"
    password = var.pw
  }
}
machine "down" {
  mac = "52:54:00:00:00:02"
  bmc {
    address  = "http://%s"
    username = "admin"
    password = var.pw
  }
}
`, ln.Addr(), deadAddr)
	if err := os.WriteFile(sitePath, []byte(siteHCL), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"METAL_VAR_pw": password}
	common := []string{"--site", sitePath, "--timeout", "20s"}

	powerOf := func(args ...string) (int, map[string]string, string) {
		code, stdout, stderr := metal(t, env, append(append([]string{"bmc"}, args...), append(common, "--json")...)...)
		if strings.Contains(stdout+stderr, password) {
			t.Fatalf("output shows the BMC password:\n%s\n%s", stdout, stderr)
		}
		var results []struct{ Machine, Power, Error string }
		if err := json.Unmarshal([]byte(stdout), &results); err != nil {
			t.Fatalf("%v: %s\n%s", err, stdout, stderr)
		}
		power, errs := map[string]string{}, ""
		for _, r := range results {
			power[r.Machine] = r.Power
			if r.Error != "" {
				errs += r.Machine + ": " + r.Error + "\n"
			}
		}
		return code, power, errs
	}

	code, power, errs := powerOf("status", "vm1")
	if code != 0 || power["vm1"] != "off" {
		t.Fatalf("status: exit %d, power %v, errors %s", code, power, errs)
	}
	code, power, errs = powerOf("on")
	if code != 1 || power["vm1"] != "on" {
		t.Errorf("on: exit %d (want 1: one BMC is down), power %v", code, power)
	}
	if !strings.Contains(errs, "down: ") || strings.Contains(errs, "vm1: ") {
		t.Errorf("only the machine with the dead BMC should fail:\n%s", errs)
	}
	if code, power, errs = powerOf("off", "vm1"); code != 0 || power["vm1"] != "off" {
		t.Errorf("off: exit %d, power %v, errors %s", code, power, errs)
	}

	// The table names the machine that failed and why.
	code, stdout, stderr := metal(t, env, append([]string{"bmc", "status"}, common...)...)
	if code != 1 || !strings.Contains(stdout, "FAILED") || !strings.Contains(stderr, "1 of 2 machines failed") {
		t.Errorf("status table: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := metal(t, env, append([]string{"bmc", "status", "nosuch"}, common...)...); code != 1 || !strings.Contains(stderr, `no machine "nosuch"`) {
		t.Errorf("unknown machine: exit %d: %s", code, stderr)
	}
	if code, _, _ := metal(t, env, append([]string{"bmc", "bootdev", "floppy", "vm1"}, common...)...); code != 2 {
		t.Errorf("bad boot device: exit %d, want 2", code)
	}
}

// TestBMCStatusAgainstIPMISimAndVBMC: `metal bmc status` reads the power
// of a machine behind OpenIPMI's ipmi_sim (configured by bmc/ipmisim to
// run a QEMU) and of one behind a separately running `metal vbmc` process,
// and `metal bmc on` starts the ipmi_sim machine's QEMU.
func TestBMCStatusAgainstIPMISimAndVBMC(t *testing.T) {
	qemu := pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	pxetest.RequireTool(t, "ipmi_sim", "openipmi")
	pxetest.RequireTool(t, "ipmitool", "ipmitool")
	const password = "sim-pw-5521"
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	files, err := ipmisim.Write(filepath.Join(dir, "sim"), ipmisim.Config{
		Name: "vm-ipmi", Username: "admin", Password: password,
		QEMU: append([]string{qemu}, qemuhost.BaseArgs(qemutest.Accel(t), 32)...),
		FRU:  &ipmisim.FRU{ProductManufacturer: "Acme Servers", ProductName: "R1-1U", ProductSerial: "SRV-000123", BoardSerial: "BRD-0042"},
		Sensors: []ipmisim.Sensor{{Number: 0x30, Name: "Inlet Temp", Kind: ipmisim.Temperature, Reading: 41, UpperCritical: 38},
			{Number: 0x50, Name: "PSU1 Status", Kind: ipmisim.PowerSupply}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := ipmisim.Start(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sim.Stop(); err != nil {
			t.Error(err)
		}
	})

	// `metal vbmc` as its own process, as an operator runs it.
	metalBin := buildMetal(t)
	vbmcAddr := freeTCPAddr(t)
	vbmc := exec.Command(metalBin, "vbmc", "--listen", vbmcAddr, "--user", "admin",
		"--machine", "name=vm-vbmc,qmp="+filepath.Join(dir, "q.sock")+",qemu-cmd="+qemu+" -nodefaults -display none -m 32")
	vbmc.Env = append(os.Environ(), "METAL_VBMC_PASSWORD="+password)
	var vbmcOut strings.Builder
	vbmc.Stdout, vbmc.Stderr = &vbmcOut, &vbmcOut
	if err := vbmc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vbmc.Process.Kill()
		vbmc.Wait()
		if t.Failed() {
			t.Logf("metal vbmc output:\n%s", vbmcOut.String())
		}
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", vbmcAddr)
		if err == nil {
			c.Close()
			break
		}
		if i == 100 {
			t.Fatalf("metal vbmc never listened on %s", vbmcAddr)
		}
		time.Sleep(50 * time.Millisecond)
	}

	sitePath := filepath.Join(dir, "site.hcl")
	siteHCL := fmt.Sprintf(`
site "bmc" {}
variable "pw" { sensitive = true }
network "lab" {
  interface = "lo"
  subnet    = "192.0.2.0/24"
}
machine "vm-ipmi" {
  mac = "52:54:00:00:00:11"
  bmc {
    protocol = "ipmi"
    address  = "%s"
    username = "admin"
    password = var.pw
  }
}
machine "vm-vbmc" {
  mac = "52:54:00:00:00:12"
  bmc {
    address  = "http://%s"
    username = "admin"
    password = var.pw
  }
}
`, sim.Addr(), vbmcAddr)
	if err := os.WriteFile(sitePath, []byte(siteHCL), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"METAL_VAR_pw": password}
	status := func(verb string, machines ...string) map[string]string {
		t.Helper()
		args := append([]string{"bmc", verb, "--site", sitePath, "--timeout", "30s", "--json"}, machines...)
		code, stdout, stderr := metal(t, env, args...)
		if strings.Contains(stdout+stderr, password) {
			t.Fatalf("output shows the BMC password:\n%s\n%s", stdout, stderr)
		}
		var results []struct{ Machine, Power, Protocol, Error string }
		if err := json.Unmarshal([]byte(stdout), &results); err != nil {
			t.Fatalf("%v: %s\n%s", err, stdout, stderr)
		}
		power := map[string]string{}
		for _, r := range results {
			power[r.Machine] = r.Power
			if r.Error != "" {
				t.Errorf("bmc %s: %s: %s", verb, r.Machine, r.Error)
			}
		}
		if code != 0 {
			t.Errorf("bmc %s: exit %d: %s", verb, code, stderr)
		}
		return power
	}
	if got := status("status"); got["vm-ipmi"] != "off" || got["vm-vbmc"] != "off" {
		t.Fatalf("status = %v, want both off", got)
	}
	if got := status("on", "vm-ipmi"); got["vm-ipmi"] != "on" {
		t.Fatalf("on vm-ipmi = %v", got)
	}
	if sim.QEMUPID() == 0 {
		t.Error("ipmi_sim reports on but no QEMU runs")
	}
	if got := status("status"); got["vm-ipmi"] != "on" || got["vm-vbmc"] != "off" {
		t.Errorf("status after on = %v, want vm-ipmi on, vm-vbmc off", got)
	}

	// The IPMI machine's FRU and sensors, for scripts and for people.
	code, stdout, stderr := metal(t, env, "bmc", "inventory", "--site", sitePath, "--json", "vm-ipmi")
	var inv []struct {
		Inventory bmc.Inventory `json:"inventory"`
	}
	if err := json.Unmarshal([]byte(stdout), &inv); code != 0 || err != nil || len(inv) != 1 {
		t.Fatalf("bmc inventory --json: exit %d, %v: %s\n%s", code, err, stdout, stderr)
	}
	got := inv[0].Inventory
	if got.Serial != "SRV-000123" || got.Hardware == nil || got.Hardware.FRU["Board Serial"] != "BRD-0042" ||
		len(got.Hardware.Temperatures) != 1 || got.Hardware.Temperatures[0].Health != "Critical" || len(got.Hardware.PSUs) != 1 {
		t.Errorf("bmc inventory --json of vm-ipmi: %s", stdout)
	}
	code, stdout, stderr = metal(t, env, "bmc", "inventory", "--site", sitePath, "vm-ipmi")
	for _, want := range []string{"Acme Servers R1-1U serial SRV-000123", "board serial BRD-0042, 1 PSU, 0 fans, 1 temperature", "unhealthy: temperature Inlet Temp: Critical"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("bmc inventory of vm-ipmi lacks %q: exit %d\n%s%s", want, code, stdout, stderr)
		}
	}
}

func freeTCPAddr(t *testing.T) string { return testenv.FreeAddr(t) }
