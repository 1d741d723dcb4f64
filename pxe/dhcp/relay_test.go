package dhcp

import (
	"context"
	"crypto/rand"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/metal-dev/metal/pxe"
)

// TestRelayEnforced: a relayed request is answered only when its giaddr
// is a relay its subnet declares and it was sent by that relay (or by an
// address the subnet declares as a relay's); anything else is dropped
// without an answer, for a known machine as for an unknown one.
func TestRelayEnforced(t *testing.T) {
	tests := map[string]struct {
		giaddr net.IP
		peer   string
		mac    net.HardwareAddr
		answer bool
	}{
		"declared relay, sent from its giaddr":           {relayIP, "198.51.100.1:67", macUnknown, true},
		"declared relay, sent from its upstream address": {relayIP, "192.0.2.2:67", macKnownB, true},
		"declared giaddr, sent from elsewhere":           {relayIP, "192.0.2.66:67", macKnownB, false},
		"giaddr in the subnet but not a relay":           {net.IPv4(198, 51, 100, 7), "198.51.100.7:67", macUnknown, false},
		"giaddr in the server's own subnet":              {net.IPv4(192, 0, 2, 2), "192.0.2.2:67", macKnown, false},
		"giaddr in no subnet":                            {net.IPv4(203, 0, 113, 1), "192.0.2.2:67", macUnknown, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h, _ := newUnitHandler(t, unitConfig(), unitPolicy(), nil)
			from := From{Peer: netip.MustParseAddrPort(tc.peer)}
			for _, req := range []*dhcpv4.DHCPv4{
				discover(tc.mac, dhcpv4.WithRelay(tc.giaddr)),
				request(tc.mac, dhcpv4.WithRelay(tc.giaddr), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(198, 51, 100, 12)))),
				msg(dhcpv4.MessageTypeInform, tc.mac, dhcpv4.WithRelay(tc.giaddr), dhcpv4.WithClientIP(net.IPv4(198, 51, 100, 40))),
			} {
				resp, err := h.Handle(context.Background(), req, from)
				if err != nil {
					t.Fatalf("%v: %v", req.MessageType(), err)
				}
				if got := resp != nil; got != tc.answer {
					t.Errorf("%v: answered %v, want %v (%v)", req.MessageType(), got, tc.answer, resp)
				}
			}
			if _, ok := h.LeasedIP(tc.mac); ok && !tc.answer {
				t.Errorf("a refused relay's client holds a lease")
			}
		})
	}
}

func randomMAC(t testing.TB) net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		t.Fatal(err)
	}
	mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	return mac
}

// TestPoolBudget: 10,000 random MACs, each a DISCOVER and a REQUEST (a
// flood the per-MAC limit cannot see), take no more than the pool budget
// of new bindings; the last free pool address is left to a declared
// machine, which the budget never counts, and, once the budget refills,
// to a late unknown machine.
func TestPoolBudget(t *testing.T) {
	ctx := context.Background()
	cfg := unitConfig()
	cfg.RateLimit = RateLimit{PoolBurst: 20, PoolEvery: time.Minute, Burst: 10, Every: time.Second}
	cfg.Subnets[0].PoolStart = netip.MustParseAddr("192.0.2.100")
	cfg.Subnets[0].PoolEnd = netip.MustParseAddr("192.0.2.121") // 22 addresses
	late := net.HardwareAddr{0x52, 0x54, 0, 0, 8, 8}
	h, now := newUnitHandler(t, cfg, unitPolicy(), nil)

	taken := 0
	for range 10_000 {
		mac := randomMAC(t)
		offer, err := h.Handle(ctx, discover(mac), From{})
		if err != nil {
			t.Fatal(err)
		}
		if offer == nil {
			continue
		}
		req, err := dhcpv4.NewRequestFromOffer(offer)
		if err != nil {
			t.Fatal(err)
		}
		if ack, err := h.Handle(ctx, req, From{}); err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("request of an offered address: %v, %v", ack, err)
		}
		taken++
		*now = now.Add(time.Millisecond)
	}
	if taken != 20 {
		t.Errorf("the flood took %d pool addresses, want the budget's 20", taken)
	}
	// A declared machine without a reservation (spare) still gets one of
	// the two left, however spent the budget.
	if ip := dora(t, h, macPoolOK); !ip.IsValid() {
		t.Fatal("declared machine got no address")
	}
	if offer, _ := h.Handle(ctx, discover(late), From{}); offer != nil {
		t.Errorf("a new unknown MAC got an offer with the budget spent: %v", offer.YourIPAddr)
	}
	*now = now.Add(time.Minute)
	if ip := dora(t, h, late); ip != netip.MustParseAddr("192.0.2.121") {
		t.Errorf("late unknown machine got %v, want the last free address 192.0.2.121", ip)
	}
}

// TestSwitchPort: a machine declared at a switch port gets its
// reservation only when relayed by that port's relay with its circuit-id;
// through another declared relay, with another circuit-id, without
// option 82 or on the server's own link it gets nothing.
func TestSwitchPort(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 7, 7}
	port := &pxe.SwitchPort{Relay: netip.MustParseAddr("198.51.100.1"), CircuitID: "Ethernet1/7"}
	circuit := func(id string) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.AgentCircuitIDSubOption, []byte(id)),
			dhcpv4.OptGeneric(dhcpv4.AgentRemoteIDSubOption, []byte("tor-7"))))
	}
	other := net.IPv4(198, 51, 100, 2) // a second declared relay of the subnet
	tests := map[string]struct {
		mods   []dhcpv4.Modifier
		peer   string
		answer bool
	}{
		"its relay and circuit":          {[]dhcpv4.Modifier{dhcpv4.WithRelay(relayIP), circuit("Ethernet1/7")}, "192.0.2.2:67", true},
		"its relay, another circuit":     {[]dhcpv4.Modifier{dhcpv4.WithRelay(relayIP), circuit("Ethernet1/8")}, "192.0.2.2:67", false},
		"its relay, no option 82":        {[]dhcpv4.Modifier{dhcpv4.WithRelay(relayIP)}, "192.0.2.2:67", false},
		"another relay, its circuit":     {[]dhcpv4.Modifier{dhcpv4.WithRelay(other), circuit("Ethernet1/7")}, "198.51.100.2:67", false},
		"the server's link, not relayed": {nil, "0.0.0.0:68", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := unitConfig()
			cfg.Subnets[1].Relays = append(cfg.Subnets[1].Relays, netip.AddrFrom4([4]byte(other.To4())))
			policy := newTestPolicy(pxe.Host{Name: "r7", MAC: mac, IP: net.ParseIP("198.51.100.17"), SwitchPort: port})
			path := filepath.Join(t.TempDir(), "leases.json")
			h, _ := newUnitHandler(t, cfg, policy, NewFileStore(path))
			from := From{Peer: netip.MustParseAddrPort(tc.peer)}
			offer, err := h.Handle(context.Background(), discover(mac, tc.mods...), from)
			if err != nil {
				t.Fatal(err)
			}
			if (offer != nil) != tc.answer {
				t.Fatalf("offer %v, want an answer: %v", offer, tc.answer)
			}
			if offer == nil {
				return
			}
			if !offer.YourIPAddr.Equal(net.IPv4(198, 51, 100, 17)) {
				t.Errorf("offered %v, want the reservation 198.51.100.17", offer.YourIPAddr)
			}
			req, err := dhcpv4.NewRequestFromOffer(offer, tc.mods...)
			if err != nil {
				t.Fatal(err)
			}
			if ack, err := h.Handle(context.Background(), req, from); err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				t.Fatalf("request: %v, %v", ack, err)
			}
			// The lease records its port, and keeps it across a restart.
			leases, err := NewFileStore(path).Load(context.Background())
			if err != nil || len(leases) != 1 {
				t.Fatalf("stored leases %v, %v", leases, err)
			}
			l := leases[0]
			if l.Relay != port.Relay || l.CircuitID != "Ethernet1/7" || l.RemoteID != "tor-7" {
				t.Errorf("stored lease's port: relay %v circuit %q remote %q", l.Relay, l.CircuitID, l.RemoteID)
			}
		})
	}
}
