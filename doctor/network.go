package doctor

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/metal-dev/metal/site"
)

// checkInterfaces checks each served network's interface: it exists, is
// up, and has an IPv4 address inside the network's subnet (the address
// DHCP names itself with and machines fetch from).
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
		case n.Interface == "":
			c.Status, c.Detail = Skip, "no interface: reached through DHCP relays"
		default:
			c.Status, c.Detail, c.Fix = interfaceStatus(n.Interface, n.Subnet)
		}
		out = append(out, c)
	}
	return out
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
	detail := fmt.Sprintf("interface %s has no IPv4 address in %s", name, subnet)
	if len(others) > 0 {
		detail += " (it has " + strings.Join(others, ", ") + ")"
	}
	host := subnet.Addr().Next()
	return Fail, detail, fmt.Sprintf("give it one: ip addr add %s/%d dev %s", host, subnet.Bits(), name)
}
