package dhcp6

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/metal-dev/metal/pxe"
)

type onePolicy struct {
	host   pxe.Host
	intent pxe.Intent
}

func (p onePolicy) Host(_ context.Context, mac net.HardwareAddr) (pxe.Host, error) {
	if !bytes.Equal(mac, p.host.MAC) {
		return pxe.Host{}, pxe.ErrUnknownHost
	}
	return p.host, nil
}

func (p onePolicy) Intent(context.Context, net.HardwareAddr) (pxe.Intent, error) {
	return p.intent, nil
}

// summary is what a test compares of a reply.
type summary struct {
	Type    string
	Addr    string
	BootURL string
	Vendor  bool // the HTTPClient vendor class echoed
	// Relay is the Relay-Reply around the reply: how many relays deep,
	// and the type, link-address and interface-id of the innermost one
	// (to the relay nearest the client).
	Relay string
}

func summarise(d dhcpv6.DHCPv6) *summary {
	if d == nil {
		return nil
	}
	relay := ""
	for depth := 1; ; depth++ {
		r, ok := d.(*dhcpv6.RelayMessage)
		if !ok {
			break
		}
		relay = fmt.Sprintf("%d %s %s %q", depth, r.Type(), r.LinkAddr, r.Options.InterfaceID())
		if d = r.Options.RelayMessage(); d == nil {
			return &summary{Relay: relay}
		}
	}
	m := d.(*dhcpv6.Message)
	s := &summary{Type: m.Type().String(), BootURL: m.Options.BootFileURL(), Relay: relay}
	if ia := m.Options.OneIANA(); ia != nil {
		if a := ia.Options.OneAddress(); a != nil {
			s.Addr = a.IPv6Addr.String()
		}
	}
	s.Vendor = len(m.Options.VendorClasses()) > 0
	return s
}

func TestAnswer(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x06, 0x01}
	other := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x06, 0x02}
	host := pxe.Host{Name: "v6", MAC: mac, IP6: net.ParseIP("2001:db8::50")}
	install := pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k"}
	serverID := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	// EUI-64 link-local of mac (firmware and iPXE form theirs so).
	peer := &net.UDPAddr{IP: net.ParseIP("fe80::5054:ff:fe00:601"), Port: 546}
	solicit := func(mods ...dhcpv6.Modifier) *dhcpv6.Message {
		m, err := dhcpv6.NewMessage(append([]dhcpv6.Modifier{
			dhcpv6.WithClientID(&dhcpv6.DUIDUUID{UUID: [16]byte{1}}),
			dhcpv6.WithIAID([4]byte{0, 0, 0, 1}),
			dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL),
		}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		m.MessageType = dhcpv6.MessageTypeSolicit
		return m
	}
	httpClient := dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte("HTTPClient:Arch:00016:UNDI:003001")}})
	cases := map[string]struct {
		policy onePolicy
		req    *dhcpv6.Message
		peer   net.Addr
		want   *summary
	}{
		"UEFI HTTP boot: ipxe.efi's URL, the vendor class echoed": {
			policy: onePolicy{host, install}, req: solicit(httpClient, dhcpv6.WithArchType(iana.EFI_X86_64_HTTP)), peer: peer,
			want: &summary{Type: "ADVERTISE", Addr: "2001:db8::50", BootURL: "http://[2001:db8::1]:8080/boot/ipxe.efi", Vendor: true},
		},
		"UEFI PXE over IPv6: a tftp URL": {
			policy: onePolicy{host, install}, req: solicit(dhcpv6.WithArchType(iana.EFI_X86_64)), peer: peer,
			want: &summary{Type: "ADVERTISE", Addr: "2001:db8::50", BootURL: "tftp://[2001:db8::1]/ipxe.efi"},
		},
		"iPXE: its script": {
			policy: onePolicy{host, install}, req: solicit(dhcpv6.WithUserClass([]byte("iPXE"))), peer: peer,
			want: &summary{Type: "ADVERTISE", Addr: "2001:db8::50", BootURL: "http://[2001:db8::1]:8080/ipxe/52:54:00:00:06:01"},
		},
		"rapid commit: a reply": {
			policy: onePolicy{host, install}, req: solicit(dhcpv6.WithUserClass([]byte("iPXE")), dhcpv6.WithRapidCommit), peer: peer,
			want: &summary{Type: "REPLY", Addr: "2001:db8::50", BootURL: "http://[2001:db8::1]:8080/ipxe/52:54:00:00:06:01"},
		},
		"intent none: an address, no boot URL": {
			policy: onePolicy{host, pxe.Intent{Action: pxe.ActionNone}}, req: solicit(httpClient), peer: peer,
			want: &summary{Type: "ADVERTISE", Addr: "2001:db8::50"},
		},
		"http boot machine asking as PXE: no tftp URL": {
			policy: onePolicy{pxe.Host{Name: "v6", MAC: mac, IP6: host.IP6, Boot: pxe.BootHTTP}, install},
			req:    solicit(dhcpv6.WithArchType(iana.EFI_X86_64)), peer: peer,
			want: &summary{Type: "ADVERTISE", Addr: "2001:db8::50"},
		},
		"MAC from a DUID-LL": {
			policy: onePolicy{host, install},
			req:    solicit(dhcpv6.WithClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}), dhcpv6.WithUserClass([]byte("iPXE"))),
			peer:   &net.UDPAddr{IP: net.ParseIP("fe80::1"), Port: 546},
			want:   &summary{Type: "ADVERTISE", Addr: "2001:db8::50", BootURL: "http://[2001:db8::1]:8080/ipxe/52:54:00:00:06:01"},
		},
		"unknown machine: silence": {
			policy: onePolicy{pxe.Host{MAC: other}, install}, req: solicit(httpClient), peer: peer,
		},
		"no IPv6 address reserved: silence": {
			policy: onePolicy{pxe.Host{Name: "v4only", MAC: mac}, install}, req: solicit(httpClient), peer: peer,
		},
		"for another server: silence": {
			policy: onePolicy{host, install}, peer: peer,
			req: solicit(dhcpv6.WithServerID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 9, 9, 9, 9, 9}})),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := New(Config{Interface: "br0", ServerIP: netip.MustParseAddr("2001:db8::1"), HTTPBaseURL: "http://[2001:db8::1]:8080"}, tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			got := summarise(s.Answer(context.Background(), serverID, tc.peer, tc.req))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}

// A Request answered with an address binds it: pxe/http serves the
// machine's script to that address; a Release unbinds it.
func TestLeases(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x06, 0x01}
	s, err := New(Config{Interface: "br0", ServerIP: netip.MustParseAddr("2001:db8::1"), HTTPBaseURL: "http://[2001:db8::1]:8080"},
		onePolicy{pxe.Host{Name: "v6", MAC: mac, IP6: net.ParseIP("2001:db8::50")}, pxe.Intent{Action: pxe.ActionNone}})
	if err != nil {
		t.Fatal(err)
	}
	req, err := dhcpv6.NewMessage(dhcpv6.WithClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}), dhcpv6.WithIAID([4]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	req.MessageType = dhcpv6.MessageTypeRequest
	if _, ok := s.Leases().LeasedIP(mac); ok {
		t.Fatal("leased before any reply")
	}
	serverID := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	s.Answer(context.Background(), serverID, &net.UDPAddr{IP: net.ParseIP("fe80::1")}, req)
	ip, ok := s.Leases().LeasedIP(mac)
	if !ok || ip.String() != "2001:db8::50" {
		t.Errorf("LeasedIP: %v %v", ip, ok)
	}
	if m, ok := s.Leases().MACOf(net.ParseIP("2001:db8::50")); !ok || m.String() != mac.String() {
		t.Errorf("MACOf: %v %v", m, ok)
	}

	// A Release gets its Reply (UEFI firmware hangs waiting for it) and
	// unbinds the address.
	rel, err := dhcpv6.NewMessage(dhcpv6.WithClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}),
		dhcpv6.WithServerID(serverID), dhcpv6.WithIAID([4]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	rel.MessageType = dhcpv6.MessageTypeRelease
	reply, ok := s.Answer(context.Background(), serverID, &net.UDPAddr{IP: net.ParseIP("2001:db8::50")}, rel).(*dhcpv6.Message)
	if !ok || reply.Type() != dhcpv6.MessageTypeReply || reply.TransactionID != rel.TransactionID ||
		reply.Options.Status() == nil || reply.Options.Status().StatusCode != iana.StatusSuccess {
		t.Errorf("reply to a Release: %v", reply)
	}
	if _, ok := s.Leases().LeasedIP(mac); ok {
		t.Error("still leased after a Release")
	}
}

// TestAnswerRelayed: a Relay-Forward (built as a relay would, with an
// interface-id) is answered in a Relay-Reply only when its relay is
// declared, its link-address lies in a declared link, and the machine's
// reservation is on that link.
func TestAnswerRelayed(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x06, 0x01}
	onLink := pxe.Host{Name: "r6", MAC: mac, IP6: net.ParseIP("2001:db8:0:2::50")}
	offLink := pxe.Host{Name: "r6", MAC: mac, IP6: net.ParseIP("2001:db8:0:1::50")}
	install := pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k"}
	serverID := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	relayAgent := &net.UDPAddr{IP: net.ParseIP("2001:db8:0:1::2"), Port: 547}
	forward := func(link string, nested bool) dhcpv6.DHCPv6 {
		m, err := dhcpv6.NewMessage(dhcpv6.WithClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}),
			dhcpv6.WithIAID([4]byte{0, 0, 0, 1}), dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL), dhcpv6.WithUserClass([]byte("iPXE")))
		if err != nil {
			t.Fatal(err)
		}
		m.MessageType = dhcpv6.MessageTypeSolicit
		r, err := dhcpv6.EncapsulateRelay(m, dhcpv6.MessageTypeRelayForward, net.ParseIP(link), net.ParseIP("fe80::5054:ff:fe00:601"))
		if err != nil {
			t.Fatal(err)
		}
		r.AddOption(dhcpv6.OptInterfaceID([]byte("rack")))
		if !nested {
			return r
		}
		// A second relay between the first and metal: the first one's
		// link-address still says where the client is.
		outer, err := dhcpv6.EncapsulateRelay(r, dhcpv6.MessageTypeRelayForward, net.ParseIP("2001:db8:0:9::1"), net.ParseIP("2001:db8:0:9::2"))
		if err != nil {
			t.Fatal(err)
		}
		return outer
	}
	relayed := []RelayedLink{{Prefix: netip.MustParsePrefix("2001:db8:0:2::/64"), Agents: []netip.Addr{netip.MustParseAddr("2001:db8:0:1::2")}}}
	script := "http://[2001:db8::1]:8080/ipxe/52:54:00:00:06:01"
	cases := map[string]struct {
		host pxe.Host
		req  dhcpv6.DHCPv6
		peer net.Addr
		want *summary
	}{
		"declared relay, declared link: a relay reply with the interface-id": {
			host: onLink, req: forward("2001:db8:0:2::1", false), peer: relayAgent,
			want: &summary{Type: "ADVERTISE", Addr: "2001:db8:0:2::50", BootURL: script, Relay: `1 RELAY-REPL 2001:db8:0:2::1 "rack"`},
		},
		"two relays: the one nearest the client picks the link": {
			host: onLink, req: forward("2001:db8:0:2::1", true), peer: relayAgent,
			want: &summary{Type: "ADVERTISE", Addr: "2001:db8:0:2::50", BootURL: script, Relay: `2 RELAY-REPL 2001:db8:0:2::1 "rack"`},
		},
		"undeclared relay: silence": {
			host: onLink, req: forward("2001:db8:0:2::1", false), peer: &net.UDPAddr{IP: net.ParseIP("2001:db8:0:1::66"), Port: 547},
		},
		"link-address outside every declared link: silence": {
			host: onLink, req: forward("2001:db8:0:3::1", false), peer: relayAgent,
		},
		"reservation on another link: silence": {
			host: offLink, req: forward("2001:db8:0:2::1", false), peer: relayAgent,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := New(Config{Interface: "br0", ServerIP: netip.MustParseAddr("2001:db8::1"), HTTPBaseURL: "http://[2001:db8::1]:8080",
				Relayed: relayed}, onePolicy{tc.host, install})
			if err != nil {
				t.Fatal(err)
			}
			got := summarise(s.Answer(context.Background(), serverID, tc.peer, tc.req))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}
