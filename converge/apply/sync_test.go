package apply

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/site"
)

const syncSite = `
site "t" {}
network "lab" {
  interface = "br0"
  subnet    = "192.0.2.0/24"
  pool      = "192.0.2.100-192.0.2.150"
}
machine "web" {
  count   = 2
  mac     = format("52:54:00:00:00:%02x", count.index + 1)
  ip      = cidrhost("192.0.2.0/24", 10 + count.index)
  network = "lab"
  labels  = { rack = "r1" }
}
`

func loadSite(t *testing.T, src string) *site.Site {
	t.Helper()
	res, diags := site.Load("site.hcl", []byte(src), site.Options{})
	if diags.HasErrors() {
		t.Fatalf("load site: %s", hcl.Diagnostics(diags).Error())
	}
	return res.Site
}

func TestSyncDeclaresAndAdopts(t *testing.T) {
	ctx := context.Background()
	store, err := backend.Open(ctx, "file://"+filepath.Join(t.TempDir(), "state.db"), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	// The agent discovered web-1's MAC before the site declared it.
	disc := inventory.Machine{Name: "m-525400000002", MAC: "52:54:00:00:00:02",
		Hardware: &inventory.Hardware{MemoryBytes: 1 << 30}}
	if err := disc.SetState(inventory.StateDiscovered, "agent report", disc.Since()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutMachine(ctx, disc); err != nil {
		t.Fatal(err)
	}

	s := loadSite(t, syncSite)
	for range 2 { // idempotent
		if err := Sync(ctx, store, s); err != nil {
			t.Fatal(err)
		}
	}
	ms, _, err := store.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Name, MAC, IP, Network, Rack string
		State                        inventory.State
		Memory                       uint64
	}
	var got []row
	for _, m := range ms {
		r := row{m.Name, m.MAC, m.Identity.IP.String(), m.Identity.Network, m.Identity.Labels["rack"], m.State, 0}
		if m.Hardware != nil {
			r.Memory = m.Hardware.MemoryBytes
		}
		got = append(got, r)
	}
	want := []row{
		{"web-0", "52:54:00:00:00:01", "192.0.2.10", "lab", "r1", inventory.StateReady, 0},
		{"web-1", "52:54:00:00:00:02", "192.0.2.11", "lab", "r1", inventory.StateReady, 1 << 30},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("machines after sync (-want +got):\n%s", d)
	}

	// A changed declaration updates the identity, not the state.
	s.Machines[0].IP = netip.MustParseAddr("192.0.2.20")
	if err := Sync(ctx, store, s); err != nil {
		t.Fatal(err)
	}
	m, _ := store.Machine(ctx, s.Machines[0].Name)
	if m.Identity.IP.String() != "192.0.2.20" || m.State != inventory.StateReady {
		t.Errorf("after redeclaring: ip %v state %v", m.Identity.IP, m.State)
	}
}
