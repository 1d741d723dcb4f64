package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/internal/hwinv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
)

// stateSite copies testdata/state-site.hcl into a temp dir and returns its
// path; its store is file://state.db beside it.
func stateSite(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/state-site.hcl")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "site.hcl")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openSiteStore opens the store of the site file at sitePath, as `metal
// serve` would.
func openSiteStore(t *testing.T, sitePath string) inventory.Store {
	t.Helper()
	s, err := backend.Open(testCtx(t), "file://"+filepath.Join(filepath.Dir(sitePath), "state.db"), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fillStore writes what a running site would have: a declared machine that
// is provisioned, a discovered one on a pool lease, and events.
func fillStore(t *testing.T, s inventory.Store, now time.Time) {
	t.Helper()
	ctx := testCtx(t)
	web := inventory.Machine{Name: "web-01", MAC: "52:54:00:00:01:01", Power: inventory.PowerOn, PowerAt: now.Add(-time.Minute),
		Identity: inventory.Identity{IP: netip.MustParseAddr("192.0.2.11"), Image: "debian-12", Network: "prov", Labels: map[string]string{"rack": "r01"}}}
	steps := []struct {
		to    inventory.State
		cause string
		at    time.Duration
	}{
		{inventory.StateReady, "declared in the site", -5 * time.Hour},
		{inventory.StateProvisioning, "apply run-1", -4 * time.Hour},
		{inventory.StateProvisioned, "agent: image written", -3 * time.Hour},
	}
	for _, st := range steps {
		if err := web.SetState(st.to, st.cause, now.Add(st.at)); err != nil {
			t.Fatal(err)
		}
	}
	web.Intent = inventory.BootIntent{Action: inventory.BootLocal}
	web.BMCHardware = &hwinv.Report{Source: "redfish", ReadAt: now.Add(-time.Hour),
		CPUs:     []hwinv.CPU{{Socket: "CPU 1", Model: "Xeon 6330", Cores: 28, Threads: 56, Health: "OK"}},
		Disks:    []hwinv.Disk{{Name: "Drive 1", Model: "ST4000", Serial: "S-HD-2", Bytes: 4 << 40, Media: "HDD", Protocol: "SATA", Health: "Critical"}},
		Firmware: []hwinv.Firmware{{ID: "BIOS", Version: "2.1.0"}}}
	disc := inventory.Machine{Name: "disc-525400aabbcc", MAC: "52:54:00:aa:bb:cc", Hardware: &inventory.Hardware{
		CPU:         inventory.CPU{Model: "QEMU Virtual CPU", Sockets: 1, Cores: 2, Threads: 2},
		MemoryBytes: 2 << 30,
		Disks: []inventory.Disk{
			{Name: "sda", Model: "QEMU HARDDISK", SizeBytes: 500 << 30, Rotational: true},
			{Name: "vda", SizeBytes: 20 << 30},
		},
		DMI:        inventory.DMI{Vendor: "QEMU", Product: "Standard PC", Serial: "SN-42"},
		ReportedAt: now.Add(-2 * time.Minute),
	}}
	if err := disc.SetState(inventory.StateDiscovered, "agent reported hardware", now.Add(-30*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, m := range []inventory.Machine{web, disc} {
		if _, err := s.PutMachine(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AllocateLease(ctx, inventory.AllocateRequest{MAC: disc.MAC, Start: netip.MustParseAddr("192.0.2.200"), End: netip.MustParseAddr("192.0.2.200"), TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	// A machine deprovisioned earlier: gone from the store, its erase
	// records kept as events.
	for _, rec := range []inventory.EraseRecord{
		{Disk: "nvme0n1", Serial: "S6-NV-1", Method: inventory.WipeSecure, Mechanism: "nvme-format-user-data", Bytes: 960 << 30, Duration: 42 * time.Second, Verified: true, VerifiedBytes: 18 << 20},
		{Disk: "sda", Serial: "WD-7", Method: inventory.WipeZero, Mechanism: "overwrite", Bytes: 4 << 40, Duration: 7 * time.Hour, Verified: true, VerifiedBytes: 18 << 20,
			Note: "ATA drive WD is security frozen; overwritten with zeros instead"},
	} {
		if _, err := s.AppendEvent(ctx, inventory.Event{Time: now.Add(-6 * time.Hour), Kind: inventory.EventErase, Machine: "old-07", MAC: "52:54:00:00:07:07",
			Message: "erased " + rec.String(), Erase: &rec}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 120 {
		e := inventory.Event{Time: now.Add(time.Duration(i-120) * time.Second), Kind: inventory.EventScript, Machine: "web-01", MAC: web.MAC, Message: fmt.Sprintf("fetch %d", i+1)}
		if i%2 == 1 {
			e = inventory.Event{Time: e.Time, Kind: inventory.EventDHCPOffer, MAC: disc.MAC, Message: fmt.Sprintf("offer %d", i+1)}
		}
		if _, err := s.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMachinesList(t *testing.T) {
	sitePath := stateSite(t)
	s := openSiteStore(t, sitePath)
	fillStore(t, s, time.Now())
	s.Close()

	code, stdout, stderr := metal(t, nil, "machines", "--site", sitePath)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := `NAME               MAC                IP           STATE        POWER  SINCE
disc-525400aabbcc  52:54:00:aa:bb:cc  192.0.2.200  discovered   ?      30s
web-01             52:54:00:00:01:01  192.0.2.11   provisioned  on     3h
`
	// SINCE of the discovered machine is seconds; the test may straddle one.
	got := strings.Replace(stdout, "31s", "30s", 1)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("table (-want +got):\n%s", d)
	}

	code, stdout, stderr = metal(t, nil, "machines", "--site", sitePath, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var list view.MachineList
	if err := json.Unmarshal([]byte(stdout), &list); err != nil {
		t.Fatalf("json: %v\n%s", err, stdout)
	}
	var names []string
	for _, m := range list.Machines {
		names = append(names, fmt.Sprintf("%s %s %s", m.Name, m.State, m.MAC))
	}
	if d := cmp.Diff([]string{"disc-525400aabbcc discovered 52:54:00:aa:bb:cc", "web-01 provisioned 52:54:00:00:01:01"}, names); d != "" {
		t.Errorf("json machines (-want +got):\n%s", d)
	}
}

func TestMachineShow(t *testing.T) {
	sitePath := stateSite(t)
	s := openSiteStore(t, sitePath)
	fillStore(t, s, time.Now())
	s.Close()

	tests := map[string]struct {
		ref       string
		code      int
		want      []string
		wantErr   string
		wantAdopt bool
	}{
		"declared by name": {ref: "web-01", want: []string{
			"Machine web-01", "192.0.2.11", "provisioned", "rack=r01",
			"ready → provisioning  apply run-1", "provisioning → provisioned  agent: image written",
			"fetch 119", "Action:        local",
			"BMC inventory (redfish, read", "unhealthy: disk Drive 1: Critical", "Disk Drive 1:", "serial S-HD-2 [Critical]", "Firmware:      BIOS 2.1.0",
		}},
		"discovered by MAC": {ref: "52-54-00-AA-BB-CC", wantAdopt: true, want: []string{
			"Machine disc-525400aabbcc", "192.0.2.200 until", "QEMU Virtual CPU, 1 sockets, 2 cores", "Disk sda", "offer 120",
		}},
		"deprovisioned, with its erase records": {ref: "old-07", want: []string{
			"Machine old-07: removed from the store", "Erase records",
			"nvme0n1 (serial S6-NV-1): secure by nvme-format-user-data, 960.0 GiB in 42s, verified (18.0 MiB read back)",
			"sda (serial WD-7): zero by overwrite, 4.0 TiB in 7h0m0s, verified (18.0 MiB read back): ATA drive WD is security frozen",
		}},
		"unknown": {ref: "nope-01", code: 1, wantErr: "`metal machines` lists them"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := metal(t, nil, "machines", "show", "--site", sitePath, tc.ref)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, stdout)
				}
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("stderr lacks %q: %s", tc.wantErr, stderr)
			}
			if got := strings.Contains(stdout, "To adopt it"); got != tc.wantAdopt {
				t.Errorf("adopt snippet shown: %v, want %v", got, tc.wantAdopt)
			}
		})
	}

	// The adopt snippet is a machine block the site language parses, with
	// the machine's MAC and the suggested install disk (the SSD).
	code, stdout, _ := metal(t, nil, "machines", "show", "--site", sitePath, "--json", "disc-525400aabbcc")
	if code != 0 {
		t.Fatal(stdout)
	}
	var d view.MachineDetail
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig([]byte(d.Adopt), "adopt.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("adopt snippet does not parse: %v\n%s", diags, d.Adopt)
	}
	blocks := f.Body.(*hclsyntax.Body).Blocks
	if len(blocks) != 1 || blocks[0].Type != "machine" || blocks[0].Labels[0] != "disc-525400aabbcc" {
		t.Fatalf("adopt snippet is not one machine block:\n%s", d.Adopt)
	}
	attrs := blocks[0].Body.Attributes
	for name, want := range map[string]string{"mac": "52:54:00:aa:bb:cc", "disk": "/dev/vda"} {
		a, ok := attrs[name]
		if !ok {
			t.Errorf("snippet lacks %s:\n%s", name, d.Adopt)
			continue
		}
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() || v.AsString() != want {
			t.Errorf("%s = %v, want %q", name, v, want)
		}
	}
}

// TestStoreHeldByServe: an embedded store is locked by the process that
// has it open (a running metal serve); the verbs say so and what to do.
func TestStoreHeldByServe(t *testing.T) {
	sitePath := stateSite(t)
	s := openSiteStore(t, sitePath)
	defer s.Close()
	for _, args := range [][]string{{"machines"}, {"events"}, {"machines", "show", "web-01"}} {
		code, _, stderr := metal(t, nil, append(args, "--site", sitePath)...)
		if code != 1 {
			t.Errorf("%v: exit %d, want 1", args, code)
		}
		for _, want := range []string{fmt.Sprintf("locked by PID %d", os.Getpid()), "`metal serve` holds", "Stop it"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, want, stderr)
			}
		}
	}
}

func TestMissingSite(t *testing.T) {
	code, _, stderr := metal(t, nil, "machines", "--site", filepath.Join(t.TempDir(), "nope.hcl"))
	if code != exitUsage || !strings.Contains(stderr, "--state URL") {
		t.Errorf("exit %d, stderr %s", code, stderr)
	}
}
