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
	"github.com/metal-dev/metal/bmc/virtual"
)

func biosClient(t *testing.T, spec virtual.MachineSpec) *bmc.Client {
	t.Helper()
	log := testpeer.NewLog(t)
	url, _ := testpeer.VBMC(t, false, "admin", testPassword, log.Logger, spec)
	c, err := bmc.New(bmc.Config{
		Machine: spec.Name, Protocol: "redfish", Address: url, System: spec.Name,
		Username: "admin", Password: testPassword, Timeout: 5 * time.Second, PowerWait: 5 * time.Second, Retries: 1,
	}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBIOSStagedThenAppliedAtReset stages BIOS settings in the virtual
// BMC's settings object, sees them pending (typed by the registry), and in
// effect only after a reset.
func TestBIOSStagedThenAppliedAtReset(t *testing.T) {
	t.Parallel()
	sim := virtual.NewSim(virtual.SimOptions{Name: "bios-01"})
	c := biosClient(t, virtual.MachineSpec{Name: "bios-01", Machine: sim})
	ctx := context.Background()

	b, err := c.BIOS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Attributes["BootMode"] != "Uefi" || b.Attributes["PxeRetries"] != "1" || len(b.Pending) != 0 {
		t.Fatalf("fresh BIOS: %+v", b)
	}
	if a := b.Registry["BootMode"]; a.Type != "Enumeration" || len(a.Values) != 2 {
		t.Errorf("registry BootMode: %+v", a)
	}
	want := map[string]string{"BootMode": "LegacyBios", "PxeRetries": "4", "UsbPortsEnabled": "false"}
	if err := c.SetBIOS(ctx, want); err != nil {
		t.Fatal(err)
	}
	b, err = c.BIOS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, b.Pending); d != "" {
		t.Errorf("pending (-want +got):\n%s", d)
	}
	if b.Attributes["BootMode"] != "Uefi" {
		t.Errorf("staged settings took effect before a reset: %v", b.Attributes)
	}
	if err := c.Power(ctx, bmc.ActionReset); err != nil {
		t.Fatal(err)
	}
	b, err = c.BIOS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		if b.Attributes[k] != v {
			t.Errorf("after reset %s = %q, want %q", k, b.Attributes[k], v)
		}
	}
	if len(b.Pending) != 0 {
		t.Errorf("still pending after reset: %v", b.Pending)
	}
}

// TestBIOSRefusals: values the registry does not allow, a system without
// a Bios resource and an IPMI BMC fail with what is wrong, before anything
// is sent.
func TestBIOSRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := biosClient(t, virtual.MachineSpec{Name: "bios-02", Machine: virtual.NewSim(virtual.SimOptions{Name: "bios-02"})})
	for attrs, want := range map[[2]string]string{
		{"BootMode", "Efi"}:        "must be one of Uefi, LegacyBios",
		{"NoSuchThing", "x"}:       "has no BIOS attribute NoSuchThing",
		{"PxeRetries", "99"}:       "within [0, 10]",
		{"BiosRevision", "2.0"}:    "read-only",
		{"UsbPortsEnabled", "yes"}: "true or false",
	} {
		err := c.SetBIOS(ctx, map[string]string{attrs[0]: attrs[1]})
		if !errors.Is(err, bmc.ErrUnsupported) || !strings.Contains(err.Error(), want) {
			t.Errorf("SetBIOS %s=%s: %v; want ErrUnsupported saying %q", attrs[0], attrs[1], err, want)
		}
	}

	nob := biosClient(t, virtual.MachineSpec{Name: "bios-03", Machine: virtual.NewSim(virtual.SimOptions{Name: "bios-03"}), NoBIOS: true})
	if _, err := nob.BIOS(ctx); !errors.Is(err, bmc.ErrUnsupported) || !strings.Contains(err.Error(), "no Bios resource") {
		t.Errorf("BIOS of a system without one: %v", err)
	}

	ipmi, err := bmc.New(bmc.Config{Machine: "i", Protocol: "ipmi", Address: "127.0.0.1:1", Username: "u", Password: "p"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ipmi.BIOS(ctx); !errors.Is(err, bmc.ErrUnsupported) || !strings.Contains(err.Error(), "need Redfish") {
		t.Errorf("BIOS over IPMI: %v", err)
	}
}
