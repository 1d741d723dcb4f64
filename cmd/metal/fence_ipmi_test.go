package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/ipmisim"
	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestPromoteFenceIPMI is the fence against a real IPMI BMC, with real
// metal processes. The old primary's host is a `metal serve` behind
// OpenIPMI's ipmi_sim (power on starts it, power off kills it as pulling
// the power would); it answers DHCP on the lab's bridge and beats every
// 10 minutes, so it would not read a claim for the length of the test. The
// standby's site names that BMC in its fence block; each `metal promote
// --force` is the real binary:
//
//   - the BMC hangs (ipmi_sim stopped): promote fails within its
//     --fence-timeout, saying so, and the standby's `metal serve` refuses;
//   - the BMC lies (its chassis reports the host on whatever it is told):
//     promote fails, naming the power state that did not change;
//   - the BMC works: promote powers the host off and reads it back off
//     before it returns (the old primary's process is gone), and the
//     standby's `metal serve` then answers DHCP;
//   - another standby whose BMC lies, with --accept-unfenced: promote
//     succeeds, saying that the fence did not confirm anything.
func TestPromoteFenceIPMI(t *testing.T) {
	pxetest.RequireTool(t, "ipmi_sim", "openipmi")
	pxetest.RequireTool(t, "ipmitool", "ipmitool")
	pxetest.RequireTool(t, "busybox", "busybox-static")
	metalBin := buildMetal(t)
	lab := pxetest.NewLab(t)
	ns := lab.NS()
	client := lab.AddHost("c1", pxetest.MAC(1))
	d := sshdtest.StartWith(t, sshdtest.Options{Netns: ns.Name, Dial: netns.Dialer(ns.Name)})
	target := d.URL("ams1")
	const password = "fence-ipmi-pw-77"
	t.Setenv("METAL_VAR_fence_pw", password) // for every metal the test runs
	t.Setenv("SSH_AUTH_SOCK", "")
	dir := t.TempDir()

	// ipmi_sim runs in the lab's namespace, beside the metal processes.
	wrapper := filepath.Join(dir, "ipmi_sim")
	writeFile(t, wrapper, fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s ipmi_sim \"$@\"\n", ns.Name))
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	startSim := func(name string, host []string, lie bool) (ipmisim.Files, *ipmisim.Process) {
		t.Helper()
		files, err := ipmisim.Write(filepath.Join(dir, name), ipmisim.Config{
			Name: name, Username: "admin", Password: password, Host: host, IPMISim: wrapper})
		if err != nil {
			t.Fatal(err)
		}
		if lie {
			// Firmware that takes every command and reports the host on.
			writeFile(t, files.Script, "#!/bin/sh\necho \"$*\" >> "+files.ChassisLog+"\n"+
				"[ \"$2\" = get ] && for p; do case $p in power) echo power:1 ;; boot) echo boot:none ;; esac; done\nexit 0\n")
		}
		sim, err := ipmisim.Start(testCtx(t), files)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = syscall.Kill(sim.PID(), syscall.SIGCONT) // the test's own ipmi_sim
			if err := sim.Stop(); err != nil {
				t.Error(err)
			}
		})
		return files, sim
	}
	ipmitool := func(files ipmisim.Files, args ...string) string {
		t.Helper()
		host, port, _ := net.SplitHostPort(files.Addr)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := ns.Command(ctx, "ipmitool", append([]string{"-I", "lanplus", "-C", "3", "-H", host, "-p", port,
			"-U", "admin", "-f", files.PasswordFile}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ipmitool %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	siteFile := func(name, fenceAddr string) string {
		siteDir := filepath.Join(dir, name)
		if err := os.MkdirAll(siteDir, 0o755); err != nil {
			t.Fatal(err)
		}
		fence := ""
		if fenceAddr != "" {
			fence = fmt.Sprintf(`
variable "fence_pw" { sensitive = true }
fence {
  bmc {
    protocol = "ipmi"
    address  = %q
    username = "admin"
    password = var.fence_pw
  }
}
`, fenceAddr)
		}
		return labSite(t, siteDir, "ams1", fence)
	}
	serveArgs := func(sitePath, owner, every string) []string {
		return append([]string{"serve", "--tftp-addr", "192.0.2.1:69", "--api-listen", "127.0.0.1:0", "--owner", owner,
			"--backup-to", target, "--backup-every", every}, append(sshArgs(d), sitePath)...)
	}

	// The old primary's host, and a BMC that lies.
	primary, primarySim := startSim("primary-bmc", append([]string{metalBin}, serveArgs(siteFile("a", ""), "ams1-a", "10m")...), false)
	liar, _ := startSim("lying-bmc", []string{"sleep", "3600"}, true)
	ipmitool(primary, "chassis", "power", "on")
	// ipmi_sim answers before its chassis program has started the host.
	oldPID := 0
	for deadline := time.Now().Add(30 * time.Second); oldPID == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		oldPID = primarySim.QEMUPID()
	}
	if oldPID == 0 {
		t.Fatalf("ipmi_sim powered on, but no host runs:\n%s", readLog(primary.ChassisLog))
	}
	if _, ok := waitLease(t, client, time.Minute); !ok {
		t.Fatalf("the old primary never answered DHCP:\n%s", readLog(primary.ChassisLog))
	}

	standby := siteFile("b", primary.Addr)
	promote := func(sitePath, owner string, extra ...string) (int, string, time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		args := append([]string{"promote", "--site", sitePath, "--from", target, "--owner", owner, "--force"}, append(sshArgs(d), extra...)...)
		cmd := ns.Command(ctx, metalBin, args...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		var ee interface{ ExitCode() int }
		code := 0
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("metal promote: %v", err)
		}
		if strings.Contains(string(out), password) {
			t.Errorf("promote printed the fence BMC's password:\n%s", out)
		}
		return code, string(out), took
	}
	refusesToServe := func(sitePath string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := ns.Command(ctx, metalBin, serveArgs(sitePath, "ams1-b", "1s")...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "must not serve yet") || !strings.Contains(string(out), "metal promote") {
			t.Errorf("metal serve on the standby whose fence was not confirmed: %v\n%s", err, out)
		}
	}
	hostRuns := func() bool { return syscall.Kill(oldPID, 0) == nil && primarySim.QEMUPID() == oldPID }

	// The BMC hangs: ipmi_sim stopped (SIGSTOP), alive and silent.
	if err := syscall.Kill(primarySim.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	code, out, took := promote(standby, "ams1-b", "--fence-timeout", "6s")
	if err := syscall.Kill(primarySim.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("hung BMC: promote exit %d after %v", code, took.Round(time.Millisecond))
	if code != exitFailed || !strings.Contains(out, "did not confirm the old primary's host off") || !strings.Contains(out, "did not answer in time") ||
		!strings.Contains(out, "will not serve") {
		t.Errorf("promote with a hung BMC: exit %d, want %d, saying the fence timed out:\n%s", code, exitFailed, out)
	}
	// Bounded by --fence-timeout; the rest is slack for a loaded host.
	if took > time.Minute {
		t.Errorf("promote with a hung BMC took %v, with --fence-timeout 6s", took)
	}
	if !hostRuns() {
		t.Fatal("the old primary stopped, with its BMC hung")
	}
	if c := backup.UnfencedClaim(filepath.Join(dir, "b", "state"), "ams1"); c == 0 {
		t.Error("promote left no mark of its unconfirmed claim")
	}
	refusesToServe(standby)

	// The BMC lies: this promote holds the claim already and powers off
	// again.
	standby = siteFile("b", liar.Addr)
	code, out, _ = promote(standby, "ams1-b", "--fence-timeout", "30s")
	if code != exitFailed || !strings.Contains(out, "power is still on") || !strings.Contains(out, "will not serve") {
		t.Errorf("promote with a lying BMC: exit %d, want %d, naming the power state:\n%s", code, exitFailed, out)
	}
	if !strings.Contains(readLog(liar.ChassisLog), "set power 0") {
		t.Errorf("the lying BMC was never told to power off:\n%s", readLog(liar.ChassisLog))
	}
	refusesToServe(standby)

	// The BMC works: the old primary's host is off, and read back off,
	// when promote returns.
	standby = siteFile("b", primary.Addr)
	code, out, took = promote(standby, "ams1-b")
	if code != 0 || !strings.Contains(out, "powered off through its BMC") || !strings.Contains(out, "confirms it is off") {
		t.Fatalf("promote with a working BMC: exit %d:\n%s", code, out)
	}
	if hostRuns() {
		t.Fatalf("promote returned while the old primary (pid %d) still runs", oldPID)
	}
	t.Logf("working BMC: promote powered the old primary off and confirmed it in %v", took.Round(time.Millisecond))
	if s := ipmitool(primary, "chassis", "power", "status"); !strings.Contains(s, "Chassis Power is off") {
		t.Errorf("ipmi_sim after the fence: %s", s)
	}
	if !strings.Contains(readLog(primary.ChassisLog), "set power 0") {
		t.Errorf("the BMC never saw the power-off:\n%s", readLog(primary.ChassisLog))
	}
	srv := ns.Start(metalBin, serveArgs(standby, "ams1-b", "1s")...)
	leaseWithRetry(t, client, srv)
	srv.Stop()

	// --accept-unfenced: another standby, whose BMC lies, serves anyway and
	// says what it could not confirm.
	other := siteFile("c", liar.Addr)
	code, out, _ = promote(other, "ams1-c", "--fence-timeout", "30s", "--accept-unfenced")
	if code != 0 || !strings.Contains(out, "did not confirm the old primary's host off") || !strings.Contains(out, "cannot guarantee") {
		t.Errorf("promote --accept-unfenced with a lying BMC: exit %d:\n%s", code, out)
	}
	if err := backup.CheckMark(filepath.Join(dir, "c", "state"), "ams1"); err != nil {
		t.Errorf("promote --accept-unfenced left a mark: %v", err)
	}
}

// waitLease asks for a lease until one comes or d passes.
func waitLease(t *testing.T, client *pxetest.Netns, d time.Duration) (string, bool) {
	t.Helper()
	for deadline := time.Now().Add(d); ; {
		out, ok := tryLease(t, client)
		if ok || time.Now().After(deadline) {
			return out, ok
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
