package dhcp

// Proxy mode, relays and a flood, over real sockets in a pxetest lab. No
// Debian client speaks proxyDHCP or relays, so these build packets with
// insomniacslk's library (a real DHCP implementation) and send them from
// a client namespace.

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/metal-dev/metal/pxe/pxetest"
)

func parseReply(t *testing.T, b []byte) *dhcpv4.DHCPv4 {
	t.Helper()
	if b == nil {
		return nil
	}
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return m
}

// TestProxyMode: beside another DHCP server (here: a client that already
// has its address), PXE ROMs get boot information and no address, on port
// 67 and on 4011; other clients get nothing.
func TestProxyMode(t *testing.T) {
	lab := pxetest.NewLab(t)
	cfg := labConfig()
	cfg.Mode = ModeProxy
	cfg.Subnets = nil
	startServer(t, lab, cfg, newTestPolicy(), nil)
	ns := lab.AddHost("pxe", pxetest.MAC(30))
	ns.MustIP("addr", "add", "192.0.2.77/24", "dev", "eth0") // from "the other server"
	conn := udpIn(t, ns, "eth0", clientPort)

	t.Run("BIOS PXE on port 67", func(t *testing.T) {
		req := discover(pxetest.MAC(30), pxeClient(iana.INTEL_X86PC), dhcpv4.WithBroadcast(true))
		resp := parseReply(t, exchange(t, conn, req.ToBytes(), req.TransactionID, "255.255.255.255:67", 3*time.Second))
		want := &summary{Type: "OFFER", YIAddr: "0.0.0.0", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "undionly.kpxe", Broadcast: true,
			Options: map[string]string{"54": "192.0.2.1", "60": "PXEClient", "67": "undionly.kpxe", "43": "060108ff", "97": guidOpt}}
		if diff := cmp.Diff(want, summarize(resp)); diff != "" {
			t.Errorf("proxy offer (-want +got):\n%s", diff)
		}
	})
	t.Run("UEFI boot server discovery on port 4011", func(t *testing.T) {
		req := request(pxetest.MAC(30), pxeClient(iana.EFI_X86_64), dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 77)))
		resp := parseReply(t, exchange(t, conn, req.ToBytes(), req.TransactionID, "192.0.2.1:4011", 3*time.Second))
		want := &summary{Type: "ACK", YIAddr: "0.0.0.0", SIAddr: "192.0.2.1", CIAddr: "192.0.2.77", GIAddr: "0.0.0.0", File: "ipxe.efi",
			Options: map[string]string{"54": "192.0.2.1", "60": "PXEClient", "67": "ipxe.efi", "97": guidOpt}}
		if diff := cmp.Diff(want, summarize(resp)); diff != "" {
			t.Errorf("port 4011 ack (-want +got):\n%s", diff)
		}
	})
	t.Run("not a PXE client: no answer", func(t *testing.T) {
		req := discover(pxetest.MAC(30))
		if resp := exchange(t, conn, req.ToBytes(), req.TransactionID, "255.255.255.255:67", 500*time.Millisecond); resp != nil {
			t.Errorf("proxy answered a plain client: %v", parseReply(t, resp))
		}
	})
}

// TestRelay: a relay agent (a namespace with a leg in 198.51.100.0/24)
// forwards DISCOVER and REQUEST with giaddr set; the server picks the
// relay's subnet and answers the relay on port 67.
func TestRelay(t *testing.T) {
	lab := pxetest.NewLab(t)
	cfg := unitConfig()
	cfg.RateLimit = RateLimit{}
	srv, _ := startServer(t, lab, cfg, unitPolicy(), nil)
	relay := lab.AddHost("relay", nil)
	relay.MustIP("addr", "add", "192.0.2.2/24", "dev", "eth0")
	// The relay's leg in the relayed network (lo will do: the kernel
	// here has no dummy links).
	relay.MustIP("addr", "add", "198.51.100.1/32", "dev", "lo")
	lab.NS().MustIP("route", "add", "198.51.100.0/24", "via", "192.0.2.2")
	conn := udpIn(t, relay, "", serverPort) // a relay listens on 67

	tests := map[string]struct {
		mac    net.HardwareAddr
		wantIP func(netip.Addr) bool
	}{
		"unknown MAC: the relayed subnet's pool": {pxetest.MAC(40), func(a netip.Addr) bool {
			return !a.Less(netip.MustParseAddr("198.51.100.100")) && !netip.MustParseAddr("198.51.100.109").Less(a)
		}},
		"reserved MAC: its reservation": {macKnownB, func(a netip.Addr) bool { return a == netip.MustParseAddr("198.51.100.12") }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req := discover(tc.mac, dhcpv4.WithRelay(relayIP))
			offer := parseReply(t, exchange(t, conn, req.ToBytes(), req.TransactionID, "192.0.2.1:67", 3*time.Second))
			if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("no offer through the relay: %v", offer)
			}
			ip, _ := addr4(offer.YourIPAddr)
			if !tc.wantIP(ip) || !offer.GatewayIPAddr.Equal(relayIP) || !offer.Router()[0].Equal(relayIP) {
				t.Errorf("offer yiaddr %v giaddr %v router %v", ip, offer.GatewayIPAddr, offer.Router())
			}
			req, err := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithRelay(relayIP))
			if err != nil {
				t.Fatal(err)
			}
			ack := parseReply(t, exchange(t, conn, req.ToBytes(), req.TransactionID, "192.0.2.1:67", 3*time.Second))
			if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
				t.Fatalf("ack through the relay: %v", ack)
			}
			if got, ok := srv.Leases().LeasedIP(tc.mac); !ok || !got.Equal(offer.YourIPAddr) {
				t.Errorf("LeasedIP = %v %v, want %v", got, ok, offer.YourIPAddr)
			}
		})
	}
}

// gatedStore is a FileStore whose Saves wait until the test opens the
// gate, and which records when a Save has returned.
type gatedStore struct {
	*FileStore
	gate  chan struct{}
	saved chan struct{} // closed once a Save returned
	once  sync.Once
}

func (g *gatedStore) Save(ctx context.Context, leases []Lease) error {
	<-g.gate
	err := g.FileStore.Save(ctx, leases)
	g.once.Do(func() { close(g.saved) })
	return err
}

// TestAckWaitsForSave: an ACK leaves the server only once its lease is
// saved, whether the REQUEST was answered on the reader's goroutine (the
// committer sends the ACK) or on a worker; the OFFER does not wait.
func TestAckWaitsForSave(t *testing.T) {
	lab := pxetest.NewLab(t)
	path := filepath.Join(t.TempDir(), "leases.json")
	store := &gatedStore{FileStore: NewFileStore(path), gate: make(chan struct{}), saved: make(chan struct{})}
	startServer(t, lab, labConfig(), newTestPolicy(), store)
	client := lab.AddHost("c", pxetest.MAC(60))
	conn := udpIn(t, client, "eth0", clientPort)

	// A UDP socket on an interface without an address hears only
	// broadcasts: the broadcast flag asks for them.
	disc := discover(pxetest.MAC(60), dhcpv4.WithBroadcast(true))
	offer := parseReply(t, exchange(t, conn, disc.ToBytes(), disc.TransactionID, "255.255.255.255:67", 3*time.Second))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no offer while saves are held: %v", offer)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	if ack := exchange(t, conn, req.ToBytes(), req.TransactionID, "255.255.255.255:67", 700*time.Millisecond); ack != nil {
		t.Fatalf("a reply before the lease was saved: %v", parseReply(t, ack))
	}
	close(store.gate)
	ack := parseReply(t, exchange(t, conn, nil, req.TransactionID, "", 3*time.Second))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("after the save: %v, want the ACK of %v", ack, offer.YourIPAddr)
	}
	select {
	case <-store.saved:
	default:
		t.Fatal("the ACK came before the Save returned")
	}
	leases, err := NewFileStore(path).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].IP.String() != ack.YourIPAddr.String() {
		t.Errorf("stored leases %v, want the one acknowledged (%v)", leases, ack.YourIPAddr)
	}
}
