package dhcp

import (
	"context"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// seedPackets are requests of every kind the handler meets; the corpus in
// testdata/fuzz/FuzzHandle holds them as bytes too, with a few malformed.
func seedPackets() []*dhcpv4.DHCPv4 {
	ip := net.IPv4(192, 0, 2, 150)
	return []*dhcpv4.DHCPv4{
		discover(macKnown),
		discover(macUnknown, pxeClient(iana.INTEL_X86PC)),
		discover(macUnknown, pxeClient(iana.EFI_X86_64)),
		discover(macKnown, httpClient),
		discover(macKnown, ipxeUserClass, ipxeEncap),
		discover(macKnownB, dhcpv4.WithRelay(relayIP), pxeClient(iana.EFI_BC)),
		request(macUnknown, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(192, 0, 2, 1)))),
		request(macUnknown, dhcpv4.WithClientIP(ip)),
		request(macKnown, pxeClient(iana.EFI_X86_64), dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 77))),
		msg(dhcpv4.MessageTypeRelease, macUnknown, dhcpv4.WithClientIP(ip)),
		msg(dhcpv4.MessageTypeDecline, macUnknown, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip))),
		msg(dhcpv4.MessageTypeInform, macUnknown, dhcpv4.WithClientIP(ip)),
	}
}

// FuzzHandle feeds arbitrary bytes through the library's parser and the
// handler, in full and proxy mode, on both ports. The handler must not
// panic, and whatever it answers must be a reply that parses, to the
// same transaction, with an address (if any) from a configured subnet.
func FuzzHandle(f *testing.F) {
	for _, m := range seedPackets() {
		f.Add(m.ToBytes())
	}
	full, _ := newUnitHandler(f, unitConfig(), unitPolicy(), nil)
	pcfg := unitConfig()
	pcfg.Mode = ModeProxy
	proxy, _ := newUnitHandler(f, pcfg, unitPolicy(), nil)
	full.log, proxy.log = discardLog(), discardLog()
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		for _, h := range []*Handler{full, proxy} {
			for _, port4011 := range []bool{false, true} {
				resp, err := h.Handle(context.Background(), req, From{PXEPort: port4011})
				if err != nil || resp == nil {
					continue
				}
				back, err := dhcpv4.FromBytes(resp.ToBytes())
				if err != nil {
					t.Fatalf("reply does not parse: %v\n%s", err, resp)
				}
				if back.OpCode != dhcpv4.OpcodeBootReply || back.TransactionID != req.TransactionID {
					t.Fatalf("reply op %v xid %v to request xid %v", back.OpCode, back.TransactionID, req.TransactionID)
				}
				if yi, ok := addr4(back.YourIPAddr); ok {
					if h.cfg.Mode == ModeProxy {
						t.Fatalf("proxy mode gave an address: %v", yi)
					}
					if h.subnetContaining(yi) == nil {
						t.Fatalf("address %v outside every subnet", yi)
					}
				}
			}
		}
	})
}
