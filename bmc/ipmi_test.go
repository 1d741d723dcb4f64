package bmc_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
)

const testPassword = "pw-Zq8#never-logged"

// TestIPMIAgainstIPMISim drives OpenIPMI's ipmi_sim through bmclib's
// ipmitool provider and checks, through the chassis_control script's
// state file, that the simulated chassis really changed.
func TestIPMIAgainstIPMISim(t *testing.T) {
	t.Parallel()
	sim := testpeer.StartIPMISim(t, "admin", testPassword)
	log := testpeer.NewLog(t)
	c, err := bmc.New(bmc.Config{
		Machine: "ipmi-01", Protocol: "ipmi", Address: sim.Addr,
		Username: "admin", Password: testPassword,
		Timeout: 5 * time.Second, PowerWait: 5 * time.Second,
	}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	p, err := c.PowerState(ctx)
	if err != nil || p != bmc.PowerOff {
		t.Fatalf("PowerState = %q, %v; want off", p, err)
	}
	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatalf("power on: %v", err)
	}
	if got := sim.Power(t); got != "1" {
		t.Errorf("chassis power after on = %q, want 1", got)
	}
	if err := c.SetBootDevice(ctx, bmc.BootPXE, bmc.BootOptions{UEFI: true}); err != nil {
		t.Fatalf("boot device: %v", err)
	}
	if err := c.Power(ctx, bmc.ActionOff); err != nil {
		t.Fatalf("power off: %v", err)
	}
	if got := sim.Power(t); got != "0" {
		t.Errorf("chassis power after off = %q, want 0", got)
	}
	inv, err := c.Inventory(ctx)
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	if diff := cmp.Diff(bmc.Inventory{Power: bmc.PowerOff}, inv); diff != "" {
		t.Errorf("inventory over IPMI (-want +got):\n%s", diff)
	}
	if c.Provider() != "ipmitool" || c.Protocol() != "ipmi" {
		t.Errorf("provider, protocol = %q, %q; want ipmitool, ipmi", c.Provider(), c.Protocol())
	}
	calls := strings.Join(sim.Calls(t), "\n")
	for _, want := range []string{"set power 1", "set boot pxe", "set power 0"} {
		if !strings.Contains(calls, want) {
			t.Errorf("chassis_control never got %q; calls:\n%s", want, calls)
		}
	}
	if err := c.InsertMedia(ctx, bmc.MediaCD, "http://127.0.0.1/x.iso"); !errors.Is(err, bmc.ErrUnsupported) {
		t.Errorf("InsertMedia over IPMI = %v, want ErrUnsupported", err)
	}
	assertNoSecret(t, log.String())
}

// TestIPMIWrongPassword: ipmi_sim refuses the session; the error says so
// at once (no retries) and does not contain the password.
func TestIPMIWrongPassword(t *testing.T) {
	t.Parallel()
	sim := testpeer.StartIPMISim(t, "admin", "the-right-one")
	log := testpeer.NewLog(t)
	c, err := bmc.New(bmc.Config{
		Machine: "ipmi-02", Protocol: "ipmi", Address: sim.Addr,
		Username: "admin", Password: testPassword, Timeout: 5 * time.Second,
	}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.PowerState(context.Background())
	if !errors.Is(err, bmc.ErrCredentials) {
		t.Fatalf("err = %v, want ErrCredentials", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a refused login took %s: credentials errors must not be retried", took)
	}
	for _, want := range []string{"ipmi-02", sim.Addr, "check the BMC username and password"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	assertNoSecret(t, err.Error(), log.String())
}

// TestAutoFallsBackToIPMI: nothing speaks Redfish at the address, so
// "auto" settles on IPMI and says so.
func TestAutoFallsBackToIPMI(t *testing.T) {
	t.Parallel()
	sim := testpeer.StartIPMISim(t, "admin", testPassword)
	c, err := bmc.New(bmc.Config{
		Machine: "auto-01", Protocol: "auto", Address: sim.Addr, // no TCP listener on this port
		Username: "admin", Password: testPassword, Timeout: 3 * time.Second, Retries: 1,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.PowerState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"off", "ipmi", "ipmitool"}, []string{string(p), c.Protocol(), c.Provider()}); diff != "" {
		t.Errorf("power, protocol, provider (-want +got):\n%s", diff)
	}
}

func assertNoSecret(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, testPassword) {
			t.Errorf("the password leaked into:\n%s", s)
		}
	}
}
