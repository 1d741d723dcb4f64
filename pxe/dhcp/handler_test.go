package dhcp

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/metal-dev/metal/pxe"
)

var (
	macKnown   = net.HardwareAddr{0x52, 0x54, 0, 0, 1, 1}
	macKnownB  = net.HardwareAddr{0x52, 0x54, 0, 0, 1, 2} // reserved behind the relay
	macUnknown = net.HardwareAddr{0x52, 0x54, 0, 0, 9, 9}
	macNoBoot  = net.HardwareAddr{0x52, 0x54, 0, 0, 1, 3} // intent none
	macPoolOK  = net.HardwareAddr{0x52, 0x54, 0, 0, 1, 4} // known, no reservation
	relayIP    = net.IPv4(198, 51, 100, 1)
	t0         = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// bootPathPolicy is unitPolicy with web-01 (macKnown) on the boot path b.
func bootPathPolicy(b pxe.BootPath) *testPolicy {
	p := unitPolicy()
	h := p.hosts[macKnown.String()]
	h.Boot = b
	p.hosts[macKnown.String()] = h
	return p
}

func unitPolicy() *testPolicy {
	p := newTestPolicy(
		pxe.Host{Name: "web-01", MAC: macKnown, IP: net.ParseIP("192.0.2.11")},
		pxe.Host{Name: "db-01", Hostname: "db-01.lab.example", MAC: macKnownB, IP: net.ParseIP("198.51.100.12")},
		pxe.Host{Name: "nas-01", MAC: macNoBoot, IP: net.ParseIP("192.0.2.13")},
		pxe.Host{Name: "spare", MAC: macPoolOK},
	)
	p.intents[macNoBoot.String()] = pxe.Intent{Action: pxe.ActionNone}
	return p
}

// unitConfig is labConfig with a second, relayed subnet.
func unitConfig() Config {
	c := labConfig()
	c.Subnets = append(c.Subnets, Subnet{
		CIDR:      netip.MustParsePrefix("198.51.100.0/24"),
		Gateway:   netip.MustParseAddr("198.51.100.1"),
		PoolStart: netip.MustParseAddr("198.51.100.100"),
		PoolEnd:   netip.MustParseAddr("198.51.100.109"),
		LeaseTime: time.Hour,
		// The relay's address in the subnet (giaddr) and the one it
		// forwards from (TestRelay's relay is 192.0.2.2).
		Relays: []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.2")},
	})
	c.RateLimit.Disabled = true
	return c
}

func newUnitHandler(t testing.TB, cfg Config, p pxe.BootPolicy, store LeaseStore) (*Handler, *time.Time) {
	t.Helper()
	h, err := NewHandler(cfg, p, store, tlog(t))
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	h.now = func() time.Time { return now }
	if err := h.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return h, &now
}

// Request builders, as the firmware and clients send them.

func discover(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		panic(err)
	}
	return m
}

func request(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}, mods...)...)
	if err != nil {
		panic(err)
	}
	return m
}

func msg(mt dhcpv4.MessageType, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(mt)}, mods...)...)
	if err != nil {
		panic(err)
	}
	return m
}

func pxeClient(arch iana.Arch) dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) {
		d.UpdateOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:002001", arch)))
		d.UpdateOption(dhcpv4.OptClientArch(arch))
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, make([]byte, 16)...)))
	}
}

func httpClient(d *dhcpv4.DHCPv4) {
	d.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001"))
	d.UpdateOption(dhcpv4.OptClientArch(iana.EFI_X86_64_HTTP))
}

// ipxeUserClass is how iPXE sends option 77: the bare string.
func ipxeUserClass(d *dhcpv4.DHCPv4) { d.UpdateOption(dhcpv4.OptUserClass("iPXE")) }

func ipxeEncap(d *dhcpv4.DHCPv4) {
	d.UpdateOption(dhcpv4.OptGeneric(optionIPXEEncap, []byte{0x13, 1, 1})) // "bus-id"-style feature flag
}

// summary is the part of a reply the tests compare.
type summary struct {
	Type, YIAddr, SIAddr, CIAddr, GIAddr, File string
	Broadcast                                  bool
	Options                                    map[string]string
}

func summarize(r *dhcpv4.DHCPv4) *summary {
	if r == nil {
		return nil
	}
	s := &summary{
		Type:      r.MessageType().String(),
		YIAddr:    r.YourIPAddr.String(),
		SIAddr:    r.ServerIPAddr.String(),
		CIAddr:    r.ClientIPAddr.String(),
		GIAddr:    r.GatewayIPAddr.String(),
		File:      r.BootFileName,
		Broadcast: r.IsBroadcast(),
		Options:   map[string]string{},
	}
	for code, v := range r.Options {
		var val string
		switch dhcpv4.GenericOptionCode(code) {
		case dhcpv4.GenericOptionCode(dhcpv4.OptionSubnetMask.Code()):
			val = net.IP(v).String()
		case dhcpv4.GenericOptionCode(dhcpv4.OptionRouter.Code()), dhcpv4.GenericOptionCode(dhcpv4.OptionDomainNameServer.Code()), dhcpv4.GenericOptionCode(dhcpv4.OptionServerIdentifier.Code()):
			var ips []string
			for i := 0; i+4 <= len(v); i += 4 {
				ips = append(ips, net.IP(v[i:i+4]).String())
			}
			val = strings.Join(ips, ",")
		case dhcpv4.GenericOptionCode(dhcpv4.OptionIPAddressLeaseTime.Code()), dhcpv4.GenericOptionCode(dhcpv4.OptionRenewTimeValue.Code()), dhcpv4.GenericOptionCode(dhcpv4.OptionRebindingTimeValue.Code()):
			var d dhcpv4.Duration
			_ = d.FromBytes(v)
			val = time.Duration(d).String()
		case dhcpv4.GenericOptionCode(dhcpv4.OptionDHCPMessageType.Code()):
			continue // in Type
		case dhcpv4.GenericOptionCode(dhcpv4.OptionHostName.Code()), dhcpv4.GenericOptionCode(dhcpv4.OptionDomainName.Code()),
			dhcpv4.GenericOptionCode(dhcpv4.OptionClassIdentifier.Code()), dhcpv4.GenericOptionCode(dhcpv4.OptionBootfileName.Code()),
			dhcpv4.GenericOptionCode(dhcpv4.OptionMessage.Code()):
			val = string(v)
		default:
			val = hex.EncodeToString(v)
		}
		s.Options[fmt.Sprint(code)] = val
	}
	return s
}

// netOpts are the options of a full-mode reply in the lab subnet.
func netOpts(hostname string, extra map[string]string) map[string]string {
	m := map[string]string{
		"1": "255.255.255.0", "3": "192.0.2.254", "6": "192.0.2.53,192.0.2.54", "15": "lab.example",
		"51": "10m0s", "58": "5m0s", "59": "8m45s", "54": "192.0.2.1",
	}
	if hostname != "" {
		m["12"] = hostname
	}
	for k, v := range extra {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

const guidOpt = "0000000000000000000000000000000000"

func TestHandle(t *testing.T) {
	tests := map[string]struct {
		cfg     func(*Config)
		policy  pxe.BootPolicy
		req     *dhcpv4.DHCPv4
		from    From
		want    *summary
		wantErr string
	}{
		"reserved BIOS PXE gets its address and undionly": {
			req: discover(macKnown, pxeClient(iana.INTEL_X86PC)),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "undionly.kpxe",
				Options: netOpts("web-01", map[string]string{"60": "PXEClient", "67": "undionly.kpxe", "43": "060108ff", "97": guidOpt})},
		},
		"unknown UEFI x64 (7) gets a pool address and ipxe.efi": {
			req: discover(macUnknown, pxeClient(iana.EFI_BC)),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.100", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "ipxe.efi",
				Options: netOpts("", map[string]string{"60": "PXEClient", "67": "ipxe.efi", "43": "060108ff", "97": guidOpt})},
		},
		"UEFI x64 (9) with snponly.efi chosen": {
			cfg: func(c *Config) { c.BootFiles.UEFI = "snponly.efi" },
			req: discover(macKnown, pxeClient(iana.EFI_X86_64)),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "snponly.efi",
				Options: netOpts("web-01", map[string]string{"60": "PXEClient", "67": "snponly.efi", "43": "060108ff", "97": guidOpt})},
		},
		"UEFI HTTP boot gets a URL and HTTPClient echoed": {
			req: discover(macKnown, httpClient),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "http://192.0.2.1:8080/boot/ipxe.efi",
				Options: netOpts("web-01", map[string]string{"60": "HTTPClient", "67": "http://192.0.2.1:8080/boot/ipxe.efi"})},
		},
		"secure boot, UEFI PXE: shim over TFTP, never iPXE": {
			policy: bootPathPolicy(pxe.BootSecure),
			req:    discover(macKnown, pxeClient(iana.EFI_X86_64)),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "shimx64.efi",
				Options: netOpts("web-01", map[string]string{"60": "PXEClient", "67": "shimx64.efi", "43": "060108ff", "97": guidOpt})},
		},
		"secure boot, UEFI HTTP boot: an address, no URL (the signed GRUB has no HTTP; PXE next)": {
			policy: bootPathPolicy(pxe.BootSecure),
			req:    discover(macKnown, httpClient),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("web-01", nil)},
		},
		"secure boot, BIOS PXE: an address, no boot file": {
			policy: bootPathPolicy(pxe.BootSecure),
			req:    discover(macKnown, pxeClient(iana.INTEL_X86PC)),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("web-01", nil)},
		},
		"http boot machine, UEFI PXE: an address, no boot file (no TFTP)": {
			policy: bootPathPolicy(pxe.BootHTTP),
			req:    discover(macKnown, pxeClient(iana.EFI_X86_64)),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("web-01", nil)},
		},
		"http boot machine, UEFI HTTP boot: ipxe.efi's URL": {
			policy: bootPathPolicy(pxe.BootHTTP),
			req:    discover(macKnown, httpClient),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "http://192.0.2.1:8080/boot/ipxe.efi",
				Options: netOpts("web-01", map[string]string{"60": "HTTPClient", "67": "http://192.0.2.1:8080/boot/ipxe.efi"})},
		},
		"virtual media machine, UEFI HTTP boot: an address, no boot file": {
			policy: bootPathPolicy(pxe.BootVirtualMedia),
			req:    discover(macKnown, httpClient),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("web-01", nil)},
		},
		"iPXE (user class) gets its script URL": {
			req: discover(macKnown, pxeClient(iana.INTEL_X86PC), ipxeUserClass),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "http://192.0.2.1:8080/ipxe/52:54:00:00:01:01",
				Options: netOpts("web-01", map[string]string{"60": "PXEClient", "67": "http://192.0.2.1:8080/ipxe/52:54:00:00:01:01", "43": "060108ff", "97": guidOpt})},
		},
		"iPXE (option 175, RFC 3004 user class) gets its script URL": {
			req: discover(macKnown, ipxeEncap, dhcpv4.WithUserClass("iPXE", true)),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "http://192.0.2.1:8080/ipxe/52:54:00:00:01:01",
				Options: netOpts("web-01", map[string]string{"67": "http://192.0.2.1:8080/ipxe/52:54:00:00:01:01"})},
		},
		"an OS's DHCP client gets an address, no boot file": {
			req: discover(macKnown),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("web-01", nil)},
		},
		"intent none: address, no boot file": {
			req: discover(macNoBoot, pxeClient(iana.INTEL_X86PC)),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.13", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("nas-01", nil)},
		},
		"arm64 without an arm64 boot file: no boot file": {
			req: discover(macKnown, pxeClient(iana.EFI_ARM64)),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("web-01", nil)},
		},
		"known host without reservation gets the pool": {
			req: discover(macPoolOK),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.100", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("spare", nil)},
		},
		"ignore unknown: no answer": {
			cfg: func(c *Config) { c.IgnoreUnknown = true },
			req: discover(macUnknown, pxeClient(iana.INTEL_X86PC)),
		},
		"ignore unknown still answers the known": {
			cfg: func(c *Config) { c.IgnoreUnknown = true },
			req: discover(macKnown),
			want: &summary{Type: "OFFER", YIAddr: "192.0.2.11", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("web-01", nil)},
		},
		"relayed unknown: pool of the relay's subnet": {
			req: discover(macUnknown, dhcpv4.WithRelay(relayIP)),
			want: &summary{Type: "OFFER", YIAddr: "198.51.100.100", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "198.51.100.1",
				Options: map[string]string{"1": "255.255.255.0", "3": "198.51.100.1", "51": "1h0m0s", "58": "30m0s", "59": "52m30s", "54": "192.0.2.1"}},
		},
		"relayed reserved: its reservation and hostname": {
			req: discover(macKnownB, dhcpv4.WithRelay(relayIP), pxeClient(iana.EFI_X86_64)),
			want: &summary{Type: "OFFER", YIAddr: "198.51.100.12", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "198.51.100.1", File: "ipxe.efi",
				Options: map[string]string{"1": "255.255.255.0", "3": "198.51.100.1", "51": "1h0m0s", "58": "30m0s", "59": "52m30s", "54": "192.0.2.1",
					"12": "db-01.lab.example", "60": "PXEClient", "67": "ipxe.efi", "43": "060108ff", "97": guidOpt}},
		},
		"relay from an unknown network: dropped": {
			req: discover(macUnknown, dhcpv4.WithRelay(net.IPv4(203, 0, 113, 1))),
		},
		"reservation outside the network asked from": {
			req:     discover(macKnown, dhcpv4.WithRelay(relayIP)),
			wantErr: "outside subnet",
		},
		"request for another server's offer: silence": {
			req: request(macUnknown, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(192, 0, 2, 9))), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 0, 2, 150)))),
		},
		"init-reboot on the wrong network: NAK": {
			req: request(macUnknown, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 1, 2, 3)))),
			want: &summary{Type: "NAK", YIAddr: "0.0.0.0", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: map[string]string{"54": "192.0.2.1", "56": "wrong network"}},
		},
		"reserved host asking for another address: NAK": {
			req: request(macKnown, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 0, 2, 150)))),
			want: &summary{Type: "NAK", YIAddr: "0.0.0.0", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: map[string]string{"54": "192.0.2.1", "56": errNotOurs.Error()}},
		},
		"relayed NAK has the broadcast bit": {
			req: request(macUnknown, dhcpv4.WithRelay(relayIP), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 0, 2, 150)))),
			want: &summary{Type: "NAK", YIAddr: "0.0.0.0", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "198.51.100.1", Broadcast: true,
				Options: map[string]string{"54": "192.0.2.1", "56": "wrong network"}},
		},
		"init-reboot of a free pool address: adopted": {
			req: request(macUnknown, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 0, 2, 150)))),
			want: &summary{Type: "ACK", YIAddr: "192.0.2.150", SIAddr: "0.0.0.0", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0",
				Options: netOpts("", nil)},
		},
		"inform: options, no address, no lease time": {
			req: msg(dhcpv4.MessageTypeInform, macUnknown, dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 40))),
			want: &summary{Type: "ACK", YIAddr: "0.0.0.0", SIAddr: "0.0.0.0", CIAddr: "192.0.2.40", GIAddr: "0.0.0.0",
				Options: netOpts("", map[string]string{"51": "", "58": "", "59": ""})},
		},
		"policy failure is an error, not an answer": {
			policy:  errPolicy{},
			req:     discover(macKnown),
			wantErr: "inventory down",
		},
		"a reply is not a request": {
			req:     discover(macKnown, func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply }),
			wantErr: "not a request",
		},
		"not Ethernet": {
			req:     discover(net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}),
			wantErr: "only Ethernet",
		},
		"BOOTP": {
			req:     discover(macKnown, dhcpv4.WithoutOption(dhcpv4.OptionDHCPMessageType)),
			wantErr: "bootp",
		},
		"proxy: BIOS PXE gets boot file, no address": {
			cfg: func(c *Config) { c.Mode = ModeProxy },
			req: discover(macUnknown, pxeClient(iana.INTEL_X86PC)),
			want: &summary{Type: "OFFER", YIAddr: "0.0.0.0", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "undionly.kpxe",
				Options: map[string]string{"54": "192.0.2.1", "60": "PXEClient", "67": "undionly.kpxe", "43": "060108ff", "97": guidOpt}},
		},
		"proxy: UEFI offer without option 43, so it asks on 4011": {
			cfg: func(c *Config) { c.Mode = ModeProxy },
			req: discover(macKnown, pxeClient(iana.EFI_X86_64)),
			want: &summary{Type: "OFFER", YIAddr: "0.0.0.0", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "ipxe.efi",
				Options: map[string]string{"54": "192.0.2.1", "60": "PXEClient", "67": "ipxe.efi", "97": guidOpt}},
		},
		"proxy: port 4011 request gets an ACK": {
			cfg:  func(c *Config) { c.Mode = ModeProxy },
			req:  request(macKnown, pxeClient(iana.EFI_X86_64), dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 77))),
			from: From{Peer: netip.MustParseAddrPort("192.0.2.77:68"), PXEPort: true},
			want: &summary{Type: "ACK", YIAddr: "0.0.0.0", SIAddr: "192.0.2.1", CIAddr: "192.0.2.77", GIAddr: "0.0.0.0", File: "ipxe.efi",
				Options: map[string]string{"54": "192.0.2.1", "60": "PXEClient", "67": "ipxe.efi", "97": guidOpt}},
		},
		"proxy: iPXE gets its script, marked PXEClient": {
			cfg: func(c *Config) { c.Mode = ModeProxy },
			req: discover(macKnown, ipxeEncap, ipxeUserClass),
			want: &summary{Type: "OFFER", YIAddr: "0.0.0.0", SIAddr: "192.0.2.1", CIAddr: "0.0.0.0", GIAddr: "0.0.0.0", File: "http://192.0.2.1:8080/ipxe/52:54:00:00:01:01",
				Options: map[string]string{"54": "192.0.2.1", "60": "PXEClient", "67": "http://192.0.2.1:8080/ipxe/52:54:00:00:01:01"}},
		},
		"proxy: not a PXE client: silence": {
			cfg: func(c *Config) { c.Mode = ModeProxy },
			req: discover(macKnown),
		},
		"proxy: request on port 67 is the other server's": {
			cfg: func(c *Config) { c.Mode = ModeProxy },
			req: request(macKnown, pxeClient(iana.INTEL_X86PC), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 0, 2, 150)))),
		},
		"proxy: intent none: silence": {
			cfg: func(c *Config) { c.Mode = ModeProxy },
			req: discover(macNoBoot, pxeClient(iana.INTEL_X86PC)),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := unitConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			var p pxe.BootPolicy = unitPolicy()
			if tc.policy != nil {
				p = tc.policy
			}
			h, _ := newUnitHandler(t, cfg, p, nil)
			resp, err := h.Handle(context.Background(), tc.req, tc.from)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, summarize(resp)); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if resp != nil && resp.TransactionID != tc.req.TransactionID {
				t.Errorf("xid %v, want %v", resp.TransactionID, tc.req.TransactionID)
			}
		})
	}
}

// dora runs DISCOVER then REQUEST for mac and returns the leased address.
func dora(t *testing.T, h *Handler, mac net.HardwareAddr, mods ...dhcpv4.Modifier) netip.Addr {
	t.Helper()
	ip, _ := addr4(doraAck(t, h, mac, mods...).YourIPAddr)
	return ip
}

// doraAck is dora returning the ACK.
func doraAck(t *testing.T, h *Handler, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	ctx := context.Background()
	offer, err := h.Handle(ctx, discover(mac, mods...), From{})
	if err != nil || offer == nil {
		t.Fatalf("discover %v: %v, %v", mac, offer, err)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := h.Handle(ctx, req, From{})
	if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("request %v: %v, %v", mac, ack, err)
	}
	return ack
}

// TestLeaseLife walks leases through their life: same MAC same address,
// renew, release, decline, offers that expire, a full pool.
func TestLeaseLife(t *testing.T) {
	ctx := context.Background()
	cfg := unitConfig()
	cfg.Subnets[0].PoolStart = netip.MustParseAddr("192.0.2.100")
	cfg.Subnets[0].PoolEnd = netip.MustParseAddr("192.0.2.102")
	h, now := newUnitHandler(t, cfg, unitPolicy(), nil)
	mac := func(i int) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, byte(i)} }

	a := dora(t, h, mac(1))
	if got := dora(t, h, mac(1)); got != a {
		t.Errorf("same MAC got %v, then %v", a, got)
	}
	b := dora(t, h, mac(2))
	if a == b {
		t.Fatalf("two MACs got %v", a)
	}
	if ip, ok := h.LeasedIP(mac(1)); !ok || ip.String() != a.String() {
		t.Errorf("LeasedIP = %v %v, want %v", ip, ok, a)
	}
	if m, ok := h.MACOf(net.IP(b.AsSlice())); !ok || m.String() != mac(2).String() {
		t.Errorf("MACOf(%v) = %v %v, want %v", b, m, ok, mac(2))
	}

	// Renewing (unicast, ciaddr) extends the lease.
	*now = now.Add(6 * time.Minute)
	ack, err := h.Handle(ctx, request(mac(1), dhcpv4.WithClientIP(net.IP(a.AsSlice()))), From{})
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("renew: %v %v", ack, err)
	}

	// A third MAC takes the last address; a fourth finds the pool full,
	// an address is never given to two MACs.
	c := dora(t, h, mac(3))
	if _, err := h.Handle(ctx, discover(mac(4)), From{}); err == nil || !strings.Contains(err.Error(), ErrPoolExhausted.Error()) {
		t.Fatalf("full pool: %v, want %v", err, ErrPoolExhausted)
	}
	seen := map[netip.Addr]bool{a: true, b: true, c: true}
	if len(seen) != 3 {
		t.Fatalf("addresses %v %v %v not distinct", a, b, c)
	}

	// A RELEASE or DECLINE of b from another address (a host speaking for
	// mac(2), its MAC in the packet) changes nothing; nor does a release
	// of b naming another MAC.
	rogue := From{Peer: netip.AddrPortFrom(a, 68)}
	if _, err := h.Handle(ctx, msg(dhcpv4.MessageTypeRelease, mac(2), dhcpv4.WithClientIP(net.IP(b.AsSlice()))), rogue); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Handle(ctx, msg(dhcpv4.MessageTypeDecline, mac(2), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(b.AsSlice())))), rogue); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Handle(ctx, msg(dhcpv4.MessageTypeRelease, mac(1), dhcpv4.WithClientIP(net.IP(b.AsSlice()))), From{Peer: netip.AddrPortFrom(b, 68)}); err != nil {
		t.Fatal(err)
	}
	if ip, ok := h.LeasedIP(mac(2)); !ok || ip.String() != b.String() {
		t.Fatalf("after spoofed releases and declines mac(2) holds %v %v, want %v", ip, ok, b)
	}

	// RELEASE from the holder frees the address: no longer leased, and the
	// fourth MAC gets it.
	rel, err := h.Handle(ctx, msg(dhcpv4.MessageTypeRelease, mac(2), dhcpv4.WithClientIP(net.IP(b.AsSlice()))), From{Peer: netip.AddrPortFrom(b, 68)})
	if err != nil || rel != nil {
		t.Fatalf("release: %v %v", rel, err)
	}
	if _, ok := h.LeasedIP(mac(2)); ok {
		t.Error("released MAC still has a lease")
	}
	if got := dora(t, h, mac(4)); got != b {
		t.Errorf("after release the pool gave %v, want the released %v", got, b)
	}

	// DECLINE takes the address out of the pool for DeclineTime.
	if _, err := h.Handle(ctx, msg(dhcpv4.MessageTypeDecline, mac(3), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(c.AsSlice())))), From{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Handle(ctx, discover(mac(3)), From{}); err == nil {
		t.Error("declined address offered again at once")
	}
	*now = now.Add(cfg.DeclineTime + 11*time.Minute) // every lease ran out too
	if got := dora(t, h, mac(3)); got != c {
		t.Errorf("after the decline ran out got %v, want %v", got, c)
	}

	// An offer not taken up holds its address only for OfferHold.
	*now = now.Add(time.Hour)
	h2, now2 := newUnitHandler(t, cfg, unitPolicy(), nil)
	for i := 10; i < 13; i++ {
		if _, err := h2.Handle(ctx, discover(mac(i)), From{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h2.Handle(ctx, discover(mac(13)), From{}); err == nil {
		t.Error("pool of held offers gave a fourth address")
	}
	*now2 = now2.Add(defaultOfferHold + time.Second)
	if _, err := h2.Handle(ctx, discover(mac(13)), From{}); err != nil {
		t.Errorf("offers past their hold still block the pool: %v", err)
	}
}

// TestLeasesPersist checks that a new handler on the same file gives every
// MAC its address back, in any order, and that the file is the only state.
func TestLeasesPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	cfg := unitConfig()
	h1, _ := newUnitHandler(t, cfg, unitPolicy(), NewFileStore(path))
	want := map[string]netip.Addr{}
	for i := 1; i <= 5; i++ {
		m := net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}
		want[m.String()] = dora(t, h1, m)
	}
	want[macKnown.String()] = dora(t, h1, macKnown)

	h2, _ := newUnitHandler(t, cfg, unitPolicy(), NewFileStore(path))
	got := map[string]netip.Addr{}
	macs := make([]string, 0, len(want))
	for m := range want {
		macs = append(macs, m)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(macs))) // not the order they were leased in
	for _, m := range macs {
		hw, _ := net.ParseMAC(m)
		if ip, ok := h2.LeasedIP(hw); !ok || ip.String() != want[m].String() {
			t.Errorf("after reload LeasedIP(%v) = %v %v, want %v", m, ip, ok, want[m])
		}
		got[m] = dora(t, h2, hw)
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("addresses after restart (-before +after):\n%s", diff)
	}
}

func TestRateLimit(t *testing.T) {
	r := newRateLimiter(RateLimit{Burst: 3, Every: time.Second, MaxTracked: 4})
	k := macKey{1}
	var got []bool
	for range 4 {
		got = append(got, r.allow(k, t0))
	}
	got = append(got, r.allow(k, t0.Add(time.Second)), r.allow(k, t0.Add(time.Second)))
	if diff := cmp.Diff([]bool{true, true, true, false, true, false}, got); diff != "" {
		t.Errorf("allowed (-want +got):\n%s", diff)
	}
	// The table stays bounded, and a MAC forgotten gets a fresh burst.
	for i := range 100 {
		if !r.allow(macKey{2, byte(i)}, t0) {
			t.Fatalf("fresh MAC %d limited", i)
		}
		if n := r.size(); n > 4 {
			t.Fatalf("rate table has %d entries, bound 4", n)
		}
	}
}

// TestRateLimitSparesHolders: a MAC that holds an address keeps its
// (spent) bucket while MACs that hold none come and go.
func TestRateLimitSparesHolders(t *testing.T) {
	holder := macKey{1}
	r := newRateLimiter(RateLimit{Burst: 1, Every: time.Hour, MaxTracked: 4})
	r.holds = func(k macKey) bool { return k == holder }
	if !r.allow(holder, t0) {
		t.Fatal("first packet limited")
	}
	for i := range 100 {
		r.allow(macKey{2, byte(i)}, t0)
	}
	if r.allow(holder, t0) {
		t.Error("the holder's bucket was forgotten: it got a fresh burst")
	}
}

func TestConfigErrors(t *testing.T) {
	tests := map[string]struct {
		edit func(*Config)
		want string
	}{
		"pool outside": {func(c *Config) { c.Subnets[0].PoolEnd = netip.MustParseAddr("192.0.3.5") }, "not inside the subnet"},
		"overlap":      {func(c *Config) { c.Subnets = append(c.Subnets, Subnet{CIDR: netip.MustParsePrefix("192.0.2.128/25")}) }, "overlaps"},
		"no http":      {func(c *Config) { c.HTTPBaseURL = "" }, "http base url"},
		"bad mode":     {func(c *Config) { c.Mode = "relay" }, "mode"},
		"host bits":    {func(c *Config) { c.Subnets[0].CIDR = netip.MustParsePrefix("192.0.2.1/24") }, "host bits"},
		"gateway":      {func(c *Config) { c.Subnets[0].Gateway = netip.MustParseAddr("10.0.0.1") }, "gateway"},
		"no subnets":   {func(c *Config) { c.Subnets = nil }, "at least one"},
		"server ip v6": {func(c *Config) { c.ServerIP = netip.MustParseAddr("2001:db8::1") }, "server ip"},
		"huge pool": {func(c *Config) {
			c.Subnets = []Subnet{{CIDR: netip.MustParsePrefix("10.0.0.0/8"), PoolStart: netip.MustParseAddr("10.0.0.1"), PoolEnd: netip.MustParseAddr("10.9.0.0")}}
		}, "more than"},
		"half a pool": {func(c *Config) { c.Subnets[0].PoolStart = netip.Addr{} }, "both start and end"},
		"short lease": {func(c *Config) { c.Subnets[0].LeaseTime = time.Second }, "lease time"},
		"reversed range": {func(c *Config) {
			c.Subnets[0].PoolStart, c.Subnets[0].PoolEnd = c.Subnets[0].PoolEnd, c.Subnets[0].PoolStart
		}, "ends before"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := labConfig()
			tc.edit(&c)
			_, err := NewHandler(c, unitPolicy(), nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestReplyAddr(t *testing.T) {
	ack := msg(dhcpv4.MessageTypeAck, macKnown)
	nak := msg(dhcpv4.MessageTypeNak, macKnown)
	offer := msg(dhcpv4.MessageTypeOffer, macKnown, dhcpv4.WithYourIP(net.IPv4(192, 0, 2, 10)))
	tests := map[string]struct {
		req, resp *dhcpv4.DHCPv4
		from      From
		want      string
	}{
		"no address: to yiaddr at chaddr": {discover(macKnown), offer, From{}, "192.0.2.10:68 at " + macKnown.String()},
		"broadcast flag":                  {discover(macKnown, dhcpv4.WithBroadcast(true)), offer, From{}, "255.255.255.255:68"},
		"no yiaddr: broadcast":            {discover(macKnown), ack, From{}, "255.255.255.255:68"},
		"renewing: unicast to ciaddr":     {request(macKnown, dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 11))), ack, From{}, "192.0.2.11:68"},
		"NAK to a client: broadcast":      {request(macKnown, dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 11))), nak, From{}, "255.255.255.255:68"},
		"relayed: to the relay's port 67": {discover(macKnown, dhcpv4.WithRelay(relayIP)), nak, From{}, "198.51.100.1:67"},
		"port 4011: back to the sender":   {request(macKnown), ack, From{Peer: netip.MustParseAddrPort("192.0.2.77:68"), PXEPort: true}, "192.0.2.77:68"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := replyAddr(tc.req, tc.resp, tc.from).String(); got != tc.want {
				t.Errorf("reply to %s, want %s", got, tc.want)
			}
		})
	}
}
