package bmc_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
)

// TestRedfishAgainstVirtualBMCWithQEMU drives bmclib's Redfish provider
// against metal's virtual BMC over verified TLS, with a real QEMU behind
// it: power, boot device (seen on QEMU's command line), virtual media and
// inventory.
func TestRedfishAgainstVirtualBMCWithQEMU(t *testing.T) {
	t.Parallel()
	log := testpeer.NewLog(t)
	vm := testpeer.QEMU(t, "vm-01", log.Logger)
	url, caFile := testpeer.VBMC(t, true, "admin", testPassword, log.Logger, virtual.MachineSpec{
		Name: "vm-01", Machine: vm, Serial: "VM0001", BIOSVersion: "SeaBIOS-1.16",
		MACs: []string{"52:54:00:00:01:01", "52:54:00:00:01:02"},
	})
	c, err := bmc.New(bmc.Config{
		Machine: "vm-01", Protocol: "redfish", Address: url, System: "vm-01",
		Username: "admin", Password: testPassword, CAFile: caFile,
		Timeout: 10 * time.Second, PowerWait: 10 * time.Second,
	}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if p, err := c.PowerState(ctx); err != nil || p != bmc.PowerOff {
		t.Fatalf("PowerState = %q, %v; want off", p, err)
	}
	if err := c.SetBootDevice(ctx, bmc.BootPXE, bmc.BootOptions{UEFI: true}); err != nil {
		t.Fatalf("boot device: %v", err)
	}
	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatalf("power on: %v", err)
	}
	if pid := vm.PID(); pid == 0 {
		t.Fatal("power on reported success but no QEMU runs")
	} else if cmdline := procCmdline(t, pid); !strings.Contains(cmdline, "-boot once=n") {
		t.Errorf("QEMU started without the one-time PXE boot: %s", cmdline)
	}
	if c.Provider() != "gofish" {
		t.Errorf("provider = %q, want gofish", c.Provider())
	}

	inv, err := c.Inventory(ctx)
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	want := bmc.Inventory{
		Manufacturer: "QEMU", Model: "Standard PC", Serial: "VM0001", BIOSVersion: "SeaBIOS-1.16",
		MACs: []string{"52:54:00:00:01:01", "52:54:00:00:01:02"}, Power: bmc.PowerOn,
	}
	if diff := cmp.Diff(want, inv, cmpopts.IgnoreFields(bmc.Inventory{}, "Hardware")); diff != "" {
		t.Errorf("inventory (-want +got):\n%s", diff)
	}
	if inv.Hardware == nil || len(inv.Hardware.NICs) != 2 || len(inv.Hardware.Firmware) == 0 || inv.Hardware.Firmware[0].Version != "SeaBIOS-1.16" {
		t.Errorf("deep inventory %+v: want both NICs and the BIOS firmware", inv.Hardware)
	}

	iso := t.TempDir() + "/boot.iso"
	if err := os.WriteFile(iso, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.InsertMedia(ctx, bmc.MediaCD, "file://"+iso); err != nil {
		t.Fatalf("insert media: %v", err)
	}
	if err := c.EjectMedia(ctx); err != nil {
		t.Fatalf("eject media: %v", err)
	}

	if err := c.Power(ctx, bmc.ActionCycle); err != nil {
		t.Fatalf("power cycle: %v", err)
	}
	if err := c.Power(ctx, bmc.ActionOff); err != nil {
		t.Fatalf("power off: %v", err)
	}
	if pid := vm.PID(); pid != 0 {
		t.Errorf("power off reported success but QEMU %d still runs", pid)
	}
	assertNoSecret(t, log.String())
}

// TestRedfishSoftOffIgnoredIsAnError: a guest with no OS ignores the ACPI
// power button; the driver must not report the soft power off as done.
func TestRedfishSoftOffIgnoredIsAnError(t *testing.T) {
	t.Parallel()
	log := testpeer.NewLog(t)
	vm := testpeer.QEMU(t, "vm-soft", log.Logger)
	url, _ := testpeer.VBMC(t, false, "admin", testPassword, log.Logger, virtual.MachineSpec{Name: "vm-soft", Machine: vm})
	c, err := bmc.New(bmc.Config{
		Machine: "vm-soft", Protocol: "redfish", Address: url,
		Username: "admin", Password: testPassword, Timeout: 5 * time.Second, PowerWait: 2 * time.Second,
	}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatal(err)
	}
	err = c.Power(ctx, bmc.ActionSoft)
	if !errors.Is(err, bmc.ErrPowerNotReached) {
		t.Fatalf("soft off of a guest without an OS = %v, want ErrPowerNotReached", err)
	}
	if !strings.Contains(err.Error(), "BMC reported success but power is still on after 2s") {
		t.Errorf("error does not say what happened: %v", err)
	}
}

// TestRedfishTLSAndCredentials: an untrusted certificate and a wrong
// password are both clear errors, neither retried, neither leaking the
// password.
func TestRedfishTLSAndCredentials(t *testing.T) {
	t.Parallel()
	url, caFile := testpeer.VBMC(t, true, "admin", "the-right-one", nil, virtual.MachineSpec{Name: "m", Machine: newFakeMachine()})
	tests := map[string]struct {
		cfg  bmc.Config
		want error
		hint string
	}{
		"self-signed certificate not trusted": {
			cfg:  bmc.Config{Password: "the-right-one"},
			want: bmc.ErrTLS, hint: "ca_file",
		},
		"wrong password": {
			cfg:  bmc.Config{Password: testPassword, CAFile: caFile},
			want: bmc.ErrCredentials, hint: "check the BMC username and password",
		},
		"insecure_tls opt-in accepts the certificate": {
			cfg: bmc.Config{Password: "the-right-one", InsecureTLS: true},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			log := testpeer.NewLog(t)
			cfg := tc.cfg
			cfg.Machine, cfg.Protocol, cfg.Address, cfg.Username, cfg.Timeout = "tls-01", "redfish", url, "admin", 5*time.Second
			c, err := bmc.New(cfg, log.Logger)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = c.PowerState(context.Background())
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.hint) || !strings.Contains(err.Error(), "tls-01") {
				t.Errorf("error %q should name the machine and hint %q", err, tc.hint)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %s: this failure must not be retried", took)
			}
			assertNoSecret(t, err.Error(), log.String())
			if b, _ := json.Marshal(cfg); strings.Contains(string(b), testPassword) {
				t.Errorf("Config JSON carries the password: %s", b)
			}
		})
	}
}

func procCmdline(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\x00", " ")
}
