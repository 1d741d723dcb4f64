package daemon

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/metal-dev/metal/pxe/dhcp"
	"github.com/metal-dev/metal/site"
)

// dhcpGroup is what one DHCP server answers: every network served on one
// interface, with one socket set for them all. A request is mapped to its
// network by the server: by its relay's giaddr when relayed, else the
// network holding serverIP (the interface's own link).
type dhcpGroup struct {
	iface string
	// serverIP is the interface's address in its direct network (the
	// first network holding one), else its first IPv4 address: relays
	// send to it, and it is the server identifier.
	serverIP netip.Addr
	addrNote string // how serverIP was chosen, for the log
	nets     []*site.Network
	proxy    bool
}

// dhcpGroups groups the served networks by interface. A network whose
// interface has an address in it is direct; one with relay_agents needs
// no address in it (its clients are reached through the relays, which
// need only a route back: metal doctor checks it); one with neither is an
// error. Relayed networks that name no interface are answered on the
// first group's interface.
func dhcpGroups(s *site.Site, pin netip.Addr) ([]*dhcpGroup, error) {
	var groups []*dhcpGroup
	byIface := map[string]*dhcpGroup{}
	var floating []*site.Network
	for _, n := range s.Networks {
		if n.Mode == site.ModeOff || !n.Subnet.IsValid() {
			continue // no DHCP, or IPv6 only (v6Links)
		}
		if n.Interface == "" {
			if len(relayAgents(n, false)) > 0 {
				floating = append(floating, n)
			}
			continue
		}
		g := byIface[n.Interface]
		if g == nil {
			g = &dhcpGroup{iface: n.Interface, proxy: n.Mode == site.ModeProxy}
			byIface[n.Interface] = g
			groups = append(groups, g)
		}
		if proxy := n.Mode == site.ModeProxy; proxy != g.proxy {
			return nil, fmt.Errorf("network %q: interface %q serves network %q in mode %q; the networks of one interface need the same mode",
				n.Name, n.Interface, g.nets[0].Name, g.nets[0].Mode)
		}
		ip, note, err := interfaceAddr(n.Interface, n.Subnet, pin)
		switch {
		case err == nil && !g.serverIP.IsValid():
			g.serverIP, g.addrNote = ip, note
		case err != nil && len(relayAgents(n, false)) == 0:
			return nil, fmt.Errorf("network %q: %w (or, if its machines are behind a DHCP relay, list the relay in relay_agents)", n.Name, err)
		}
		g.nets = append(g.nets, n)
	}
	if len(floating) > 0 {
		if len(groups) == 0 {
			return nil, fmt.Errorf("network %q is relayed, but no network names the interface its relays' packets arrive on; set interface = \"NAME\" on it", floating[0].Name)
		}
		groups[0].nets = append(groups[0].nets, floating...)
	}
	for _, g := range groups {
		if g.serverIP.IsValid() {
			continue
		}
		ip, err := firstAddr(g.iface)
		if err != nil {
			return nil, fmt.Errorf("network %q: %w", g.nets[0].Name, err)
		}
		g.serverIP = ip
	}
	return groups, nil
}

// subnets are the group's networks as the DHCP server takes them.
func (g *dhcpGroup) subnets() []dhcp.Subnet {
	var out []dhcp.Subnet
	for _, n := range g.nets {
		out = append(out, dhcpSubnet(n))
	}
	return out
}

// firstAddr returns the interface's first IPv4 address: the one relays
// send to when none of its networks is direct.
func firstAddr(name string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %q: %w (is the network's interface setting right? `ip link` lists them)", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %q: %w", name, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && ip.IsGlobalUnicast() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %q has no IPv4 address for relays to send to; give it one (ip addr add ... dev %s)", name, name)
}
