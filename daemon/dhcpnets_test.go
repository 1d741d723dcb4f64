package daemon

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/metal-dev/metal/site"
)

// TestDHCPGroups: the networks of one interface become one DHCP server,
// identified by the interface's address in its direct network; a relayed
// network needs no address of ours; a network with neither an address nor
// relays is refused, saying what would do. (lo holds 127.0.0.1 on every
// Linux machine.)
func TestDHCPGroups(t *testing.T) {
	direct := &site.Network{Name: "prov", Interface: "lo", Subnet: netip.MustParsePrefix("127.0.0.0/8"), Mode: site.ModeDHCP}
	rack := &site.Network{Name: "r01", Interface: "lo", Subnet: netip.MustParsePrefix("198.51.100.0/24"), Mode: site.ModeDHCP,
		RelayAgents: []netip.Addr{netip.MustParseAddr("198.51.100.1")}}
	floating := &site.Network{Name: "r02", Subnet: netip.MustParsePrefix("203.0.113.0/24"), Mode: site.ModeDHCP,
		RelayAgents: []netip.Addr{netip.MustParseAddr("203.0.113.1")}}
	off := &site.Network{Name: "off", Interface: "lo", Subnet: netip.MustParsePrefix("192.0.2.0/24"), Mode: site.ModeOff}
	groups, err := dhcpGroups(&site.Site{Networks: []*site.Network{rack, direct, floating, off}}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 {
		t.Fatalf("%d groups, want one for lo", len(groups))
	}
	g := groups[0]
	var names []string
	for _, n := range g.nets {
		names = append(names, n.Name)
	}
	if g.iface != "lo" || g.serverIP != netip.MustParseAddr("127.0.0.1") || strings.Join(names, " ") != "r01 prov r02" {
		t.Errorf("group %s %v %v, want lo 127.0.0.1 [r01 prov r02]", g.iface, g.serverIP, names)
	}
	if subnets := g.subnets(); len(subnets[0].Relays) != 1 || len(subnets[1].Relays) != 0 {
		t.Errorf("relays not passed on: %+v", subnets)
	}

	stray := &site.Network{Name: "stray", Interface: "lo", Subnet: netip.MustParsePrefix("192.0.2.0/24"), Mode: site.ModeDHCP}
	if _, err := dhcpGroups(&site.Site{Networks: []*site.Network{direct, stray}}, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "relay_agents") {
		t.Errorf("a network with neither an address nor relays: %v, want an error naming relay_agents", err)
	}
	proxy := &site.Network{Name: "px", Interface: "lo", Subnet: netip.MustParsePrefix("198.51.100.0/24"), Mode: site.ModeProxy,
		RelayAgents: []netip.Addr{netip.MustParseAddr("198.51.100.1")}}
	if _, err := dhcpGroups(&site.Site{Networks: []*site.Network{direct, proxy}}, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "same mode") {
		t.Errorf("proxy and dhcp on one interface: %v, want an error", err)
	}
}

// TestV6Links: a network with IPv6 relay agents is no link of its own
// (metal advertises nothing there) but is answered, relayed, on the
// first IPv6 link when it names no interface; without any IPv6 link to
// arrive on it is refused. (lo holds ::1 where IPv6 is on.)
func TestV6Links(t *testing.T) {
	direct := &site.Network{Name: "v6", Interface: "lo", Subnet6: netip.MustParsePrefix("::1/128"), Mode: site.ModeDHCP}
	rack := &site.Network{Name: "r6", Subnet6: netip.MustParsePrefix("2001:db8:0:2::/64"), Mode: site.ModeDHCP,
		RelayAgents: []netip.Addr{netip.MustParseAddr("2001:db8:0:1::2")}}
	links, err := v6Links(&site.Site{Networks: []*site.Network{rack, direct}}, netip.Addr{})
	if err != nil {
		t.Skipf("no IPv6 on lo: %v", err)
	}
	if len(links) != 1 || links[0].net != direct || len(links[0].relayed) != 1 || links[0].relayed[0] != rack {
		t.Fatalf("links %+v, want v6 on lo with r6 relayed to it", links)
	}
	if _, err := v6Links(&site.Site{Networks: []*site.Network{rack}}, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "relayed over IPv6") {
		t.Errorf("a relayed IPv6 network with no IPv6 link: %v, want an error", err)
	}
}
