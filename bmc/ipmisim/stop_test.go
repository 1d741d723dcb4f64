package ipmisim_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/ipmisim"
)

// TestStopKillsEveryHostStarted: Stop leaves no host behind, also one the
// pid file no longer names. Two power-ons that ipmi_sim ran at once each
// start a host and the pid file keeps only the last; the other ran on
// after the test (a metal serve of the fence test, seen on a CI host).
// The second start is made here by the chassis program itself, run as
// ipmi_sim runs it, after the pid file was lost.
func TestStopKillsEveryHostStarted(t *testing.T) {
	testpeer.Need(t, "ipmi_sim", "openipmi")
	log := testpeer.NewLog(t)
	files, err := ipmisim.Write(t.TempDir(), ipmisim.Config{
		Name: "host-h", Username: "admin", Password: password, Host: []string{"sleep", "3600"}, Log: log.Logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sim, err := ipmisim.Start(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = sim.Stop()
		}
	})
	c, err := bmc.New(bmc.Config{Machine: "host-h", Protocol: bmc.ProtocolIPMI, Address: sim.Addr(),
		Username: "admin", Password: password, Timeout: 10 * time.Second, PowerWait: 10 * time.Second}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatalf("power on: %v", err)
	}
	first := sim.QEMUPID()
	if first == 0 {
		t.Fatal("after power on no host runs")
	}
	if err := os.Remove(files.PIDFile); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, files.Script, "0x20", "set", "power", "1").CombinedOutput(); err != nil {
		t.Fatalf("the chassis program's second power on: %v: %s", err, out)
	}
	// The chassis program returns once the host is forked, maybe before
	// its shell runs (and names the pid file).
	second := 0
	for deadline := time.Now().Add(10 * time.Second); second == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		second = sim.QEMUPID()
	}
	if second == 0 || second == first {
		t.Fatalf("the second power on started host %d (the first is %d), want a new one", second, first)
	}
	if !alive(first) {
		t.Fatalf("the first host %d is gone before Stop", first)
	}
	stopped = true
	if err := sim.Stop(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); alive(first) || alive(second); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after Stop, host %d alive %v, host %d alive %v; want both gone", first, alive(first), second, alive(second))
		}
	}
}
