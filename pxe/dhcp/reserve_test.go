package dhcp_test

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/dhcp"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/storeleases"
	"github.com/metal-dev/metal/pxe/storepolicy"
)

// reservingPolicy is a testPolicy that also says which machine an address
// is declared for (Reservations), as pxe/storepolicy does.
type reservingPolicy struct{ *dhcp.TestPolicy }

func (p reservingPolicy) MACOf(ip netip.Addr) (net.HardwareAddr, bool) {
	for _, h := range p.Hosts() {
		if a, ok := netip.AddrFromSlice(h.IP.To4()); ok && a == ip {
			return h.MAC, true
		}
	}
	return nil, false
}

// TestPoolSkipsReservations: a pool that overlaps two machines'
// reservations (a site metal did not validate) offers those addresses to
// their machines only, and NAKs another MAC asking for one, whether the
// server allocates alone or through a shared inventory store.
func TestPoolSkipsReservations(t *testing.T) {
	stores := map[string]func(t *testing.T) dhcp.LeaseStore{
		"memory": func(*testing.T) dhcp.LeaseStore { return nil },
		"inventory": func(t *testing.T) dhcp.LeaseStore {
			return storeleases.NewInventoryLeases(openStore(t, "file://"+filepath.Join(t.TempDir(), "state.db")))
		},
	}
	r1, r2 := pxetest.MAC(70), pxetest.MAC(71)
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			cfg := dhcp.UnitConfig()
			cfg.Subnets[0].PoolStart = netip.MustParseAddr("192.0.2.100")
			cfg.Subnets[0].PoolEnd = netip.MustParseAddr("192.0.2.103")
			policy := reservingPolicy{dhcp.NewTestPolicy(
				pxe.Host{Name: "r1", MAC: r1, IP: net.ParseIP("192.0.2.100")},
				pxe.Host{Name: "r2", MAC: r2, IP: net.ParseIP("192.0.2.102")},
			)}
			h, _ := dhcp.NewUnitHandler(t, cfg, policy, open(t))

			// Three unknown MACs ask; the shared store picks its own order.
			var offers []string
			for i := range 3 {
				mac := pxetest.MAC(80 + i)
				offer, err := h.Handle(ctx, dhcp.Discover(mac), dhcp.From{})
				switch {
				case err != nil:
					offers = append(offers, "none")
				case offer == nil:
					t.Fatalf("discover %v: no answer and no error", mac)
				default:
					offers = append(offers, offer.YourIPAddr.String())
				}
			}
			sort.Strings(offers)
			got := map[string]string{"unknown MACs' offers": strings.Join(offers, " ")}
			// A MAC that asks for a reserved address outright (INIT-REBOOT).
			nak, err := h.Handle(ctx, dhcp.Request(pxetest.MAC(83), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.0.2.102")))), dhcp.From{})
			if err != nil {
				t.Fatal(err)
			}
			got["request of r2's address"] = nak.MessageType().String()
			got["r1"] = dhcp.Dora(t, h, r1).String()
			got["r2"] = dhcp.Dora(t, h, r2).String()
			want := map[string]string{
				"unknown MACs' offers":    "192.0.2.101 192.0.2.103 none",
				"request of r2's address": "NAK",
				"r1":                      "192.0.2.100",
				"r2":                      "192.0.2.102",
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("answers (-want +got):\n%s", d)
			}
		})
	}
}

// TestPoolSkipsStoreReservations: the daemon's own policy (storepolicy over
// the inventory) reserves the pool's first address for a declared machine;
// a real client that the store does not know gets the next one, and the
// machine then gets its own.
func TestPoolSkipsStoreReservations(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := openStore(t, "file://"+filepath.Join(t.TempDir(), "state.db"))
	declared := pxetest.MAC(73)
	if _, err := store.PutMachine(ctx, inventory.Machine{
		Name: "web-01", MAC: declared.String(), State: inventory.StateReady,
		Identity: inventory.Identity{IP: netip.MustParseAddr("192.0.2.100"), Network: "lab"},
	}); err != nil {
		t.Fatal(err)
	}
	policy, err := storepolicy.New(ctx, store, storepolicy.Options{Logger: dhcp.Tlog(t)})
	if err != nil {
		t.Fatal(err)
	}
	lab := pxetest.NewLab(t)
	dhcp.StartServer(t, lab, dhcp.LabConfig(), policy, nil)
	got := map[string]string{
		"unknown":  dhcp.Udhcpc(t, lab.AddHost("u", pxetest.MAC(74)))["ip"],
		"declared": dhcp.Udhcpc(t, lab.AddHost("d", declared))["ip"],
	}
	if d := cmp.Diff(map[string]string{"unknown": "192.0.2.101", "declared": "192.0.2.100"}, got); d != "" {
		t.Errorf("leases (-want +got):\n%s", d)
	}
}
