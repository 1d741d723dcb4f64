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
	"github.com/metal-dev/metal/bmc/ipmisim"
	"github.com/metal-dev/metal/internal/hwinv"
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
	if inv.Power != bmc.PowerOff || inv.Hardware == nil || inv.Hardware.Source != "ipmi" {
		t.Errorf("inventory over IPMI = %+v, want power off and an IPMI hardware reading", inv)
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

// TestIPMIInventory reads the FRU and the SDR sensors of ipmi_sim
// programmed as a real BMC is: the FRU's maker, name and serials become
// the machine's identity, temperatures, fans and power supplies come with
// the BMC's own verdict (a temperature over its critical threshold, a
// supply reporting a failure), and the unhealthy ones are named.
func TestIPMIInventory(t *testing.T) {
	t.Parallel()
	sim := testpeer.StartIPMISimWith(t, ipmisim.Config{Username: "admin", Password: testPassword,
		FRU: &ipmisim.FRU{ChassisSerial: "CH-7781", BoardManufacturer: "Acme Boards", BoardProduct: "X11-DPi",
			BoardSerial: "BRD-0042", BoardPart: "X11DPI-NT", ProductManufacturer: "Acme Servers", ProductName: "R1-1U",
			ProductPart: "R1-1U-A", ProductVersion: "2", ProductSerial: "SRV-000123"},
		Sensors: []ipmisim.Sensor{
			{Number: 0x30, Name: "CPU1 Temp", Kind: ipmisim.Temperature, Reading: 45, UpperCritical: 90},
			{Number: 0x31, Name: "Inlet Temp", Kind: ipmisim.Temperature, Reading: 41, UpperCritical: 38},
			{Number: 0x40, Name: "FAN1", Kind: ipmisim.Fan, Reading: 4500},
			{Number: 0x41, Name: "FAN2", Kind: ipmisim.Fan, Reading: 300, UpperCritical: 200},
			{Number: 0x50, Name: "PSU1 Status", Kind: ipmisim.PowerSupply},
			{Number: 0x51, Name: "PSU2 Status", Kind: ipmisim.PowerSupply, Failed: true},
		}})
	log := testpeer.NewLog(t)
	c, err := bmc.New(bmc.Config{Machine: "ipmi-inv", Protocol: "ipmi", Address: sim.Addr,
		Username: "admin", Password: testPassword, Timeout: 20 * time.Second}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := c.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if inv.Hardware == nil {
		t.Fatalf("no hardware in %+v", inv)
	}
	if inv.Hardware.ReadAt.IsZero() {
		t.Error("the reading has no time")
	}
	inv.Hardware.ReadAt = time.Time{}
	want := bmc.Inventory{
		Manufacturer: "Acme Servers", Model: "R1-1U", Serial: "SRV-000123", Power: bmc.PowerOff,
		Hardware: &hwinv.Report{
			Source: "ipmi",
			PSUs:   []hwinv.PSU{{Name: "PSU1 Status", Health: "OK"}, {Name: "PSU2 Status", Health: "Critical"}},
			Fans: []hwinv.Sensor{{Name: "FAN1", Reading: 4500, Units: "RPM", Health: "OK"},
				{Name: "FAN2", Reading: 300, Units: "RPM", Health: "Critical"}},
			Temperatures: []hwinv.Sensor{{Name: "CPU1 Temp", Reading: 45, Units: "Cel", Health: "OK"},
				{Name: "Inlet Temp", Reading: 41, Units: "Cel", Health: "Critical"}},
			FRU: map[string]string{
				"Chassis Type": "Rack Mount Chassis", "Chassis Serial": "CH-7781", "Board Mfg Date": "Unspecified",
				"Board Mfg": "Acme Boards", "Board Product": "X11-DPi", "Board Serial": "BRD-0042", "Board Part Number": "X11DPI-NT",
				"Product Manufacturer": "Acme Servers", "Product Name": "R1-1U", "Product Part Number": "R1-1U-A",
				"Product Version": "2", "Product Serial": "SRV-000123",
			},
		},
	}
	if diff := cmp.Diff(want, inv); diff != "" {
		t.Errorf("inventory over IPMI (-want +got):\n%s", diff)
	}
	wantBad := []string{"PSU PSU2 Status: Critical", "fan FAN2: Critical", "temperature Inlet Temp: Critical"}
	if diff := cmp.Diff(wantBad, inv.Hardware.Unhealthy()); diff != "" {
		t.Errorf("unhealthy (-want +got):\n%s", diff)
	}
	assertNoSecret(t, log.String())
}

func assertNoSecret(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, testPassword) {
			t.Errorf("the password leaked into:\n%s", s)
		}
	}
}
