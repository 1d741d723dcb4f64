package doctor

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/metal-dev/metal/site"
)

// checkInterfaces checks each served network's interface: it exists, is
// up, and has an address inside the network's subnet and subnet6 (the
// addresses DHCP and DHCPv6 name and machines fetch from).
func checkInterfaces(s *site.Site) []Check {
	var out []Check
	for _, n := range s.Networks {
		c := Check{Kind: KindInterface, Subject: "network " + n.Name}
		if n.Interface != "" {
			c.Subject += " (" + n.Interface + ")"
		}
		switch {
		case n.Mode == site.ModeOff:
			c.Status, c.Detail = Skip, "mode is off: metal serves no DHCP here"
		case len(n.RelayAgents) > 0:
			// A relayed network needs no address of ours in it, only a
			// route back to each of its relays.
			c.Status, c.Detail, c.Fix = relayStatus(n)
		case n.Interface == "":
			c.Status, c.Detail = Skip, "no interface: reached through DHCP relays"
		default:
			// Each family the network declares needs its address.
			for _, p := range []netip.Prefix{n.Subnet, n.Subnet6} {
				if !p.IsValid() || (c.Status != "" && c.Status != OK) {
					continue
				}
				st, detail, fix := interfaceStatus(n.Interface, p)
				if c.Status == OK {
					detail = c.Detail + "; " + detail
				}
				c.Status, c.Detail, c.Fix = st, detail, fix
			}
		}
		out = append(out, c)
	}
	return out
}

// relayStatus checks that each relay of a relayed network is routed: the
// kernel has a route to it (so replies reach it), leaving by the
// network's interface when it names one.
func relayStatus(n *site.Network) (Status, string, string) {
	var own []netip.Addr // the interface's addresses
	if n.Interface != "" {
		ifi, err := net.InterfaceByName(n.Interface)
		if err != nil {
			return Fail, fmt.Sprintf("interface %s does not exist", n.Interface),
				fmt.Sprintf("set the network's interface to one `ip link` lists, or create %s", n.Interface)
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().IsGlobalUnicast() {
					own = append(own, ip.Unmap())
				}
			}
		}
		if len(own) == 0 {
			return Fail, fmt.Sprintf("interface %s has no address for relays to send to", n.Interface),
				fmt.Sprintf("give it one: ip addr add ADDRESS/PREFIX dev %s", n.Interface)
		}
	}
	var routed []string
	for _, r := range n.RelayAgents {
		// An IPv6 relay (DHCPv6) relays the network's subnet6.
		subnet := n.Subnet
		if r.Is6() && !r.Is4In6() {
			subnet = n.Subnet6
		}
		src, err := routeSource(r)
		if err != nil {
			return Fail, fmt.Sprintf("no route to relay %s: %v", r, err),
				fmt.Sprintf("add one: ip route add %s via ROUTER", subnet)
		}
		if len(own) > 0 && !slices.Contains(own, src) {
			return Warn, fmt.Sprintf("the route to relay %s leaves from %s, not by %s", r, src, n.Interface),
				fmt.Sprintf("route %s by %s: ip route add %s via ROUTER dev %s", subnet, n.Interface, subnet, n.Interface)
		}
		routed = append(routed, fmt.Sprintf("%s (from %s)", r, src))
	}
	return OK, fmt.Sprintf("relayed; routes to its relays: %s", strings.Join(routed, ", ")), ""
}

// routeSource asks the kernel which address it would send to dst from:
// a UDP socket's connect looks the route up and sends nothing.
func routeSource(dst netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 67)))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

func interfaceStatus(name string, subnet netip.Prefix) (Status, string, string) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return Fail, fmt.Sprintf("interface %s does not exist", name),
			fmt.Sprintf("set the network's interface to one `ip link` lists, or create %s", name)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return Fail, fmt.Sprintf("interface %s is down", name),
			fmt.Sprintf("bring it up: ip link set %s up", name)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return Fail, fmt.Sprintf("interface %s: reading its addresses: %v", name, err), "check the interface with `ip addr show " + name + "`"
	}
	var others []string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP.To4())
		if subnet.Addr().Is6() {
			ip, ok = netip.AddrFromSlice(ipn.IP)
			ok = ok && ipn.IP.To4() == nil && !ip.IsLinkLocalUnicast()
		}
		if !ok {
			continue
		}
		if subnet.Contains(ip) {
			if ifi.Flags&net.FlagRunning == 0 {
				return Warn, fmt.Sprintf("%s is up with %s but has no carrier", name, ip),
					"plug in the cable, or attach the bridge's ports; machines cannot reach metal until then"
			}
			return OK, fmt.Sprintf("%s is up with %s in %s", name, ip, subnet), ""
		}
		others = append(others, ip.String())
	}
	family := "IPv4"
	if subnet.Addr().Is6() {
		family = "IPv6"
	}
	detail := fmt.Sprintf("interface %s has no %s address in %s", name, family, subnet)
	if len(others) > 0 {
		detail += " (it has " + strings.Join(others, ", ") + ")"
	}
	host := subnet.Addr().Next()
	return Fail, detail, fmt.Sprintf("give it one: ip addr add %s/%d dev %s", host, subnet.Bits(), name)
}
