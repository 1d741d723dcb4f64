package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/dhcp6"
	"github.com/metal-dev/metal/pxe/ra"
	"github.com/metal-dev/metal/site"
)

// v6Link is an IPv6 provisioning link: a network with subnet6 served on
// its interface, where metal advertises the prefix and answers DHCPv6.
type v6Link struct {
	net *site.Network
	// serverIP is the interface's address in the network's subnet6:
	// where machines reach HTTP (and TFTP) on the link, and relays send.
	serverIP netip.Addr
	addrNote string // how serverIP was chosen, for the log
	// relayed are the networks behind DHCPv6 relays whose requests arrive
	// on this link's interface.
	relayed []*site.Network
}

// v6Links are the site's IPv6 links, one per interface: router
// advertisements and DHCPv6 on an interface speak for one prefix. A
// network with IPv6 relay_agents is behind those relays, which are its
// routers: metal advertises nothing there and answers its relayed
// DHCPv6 on the link of its interface (or the first link, when it names
// none).
func v6Links(s *site.Site, pin netip.Addr) ([]*v6Link, error) {
	var links []*v6Link
	byIface := map[string]*v6Link{}
	var relayed []*site.Network
	for _, n := range s.Networks {
		if !n.Subnet6.IsValid() || n.Mode == site.ModeOff {
			continue
		}
		if n.Mode == site.ModeProxy {
			return nil, fmt.Errorf("network %q: subnet6 on a network in mode %q: metal's DHCPv6 answers with the addresses it reserves, beside no other server; use mode = %q or drop subnet6",
				n.Name, n.Mode, site.ModeDHCP)
		}
		if len(relayAgents(n, true)) > 0 {
			relayed = append(relayed, n)
			continue
		}
		if n.Interface == "" {
			continue
		}
		if o, ok := byIface[n.Interface]; ok {
			return nil, fmt.Errorf("network %q: interface %q already serves subnet6 %s of network %q; metal advertises one IPv6 prefix per interface",
				n.Name, n.Interface, o.net.Subnet6, o.net.Name)
		}
		ip, note, err := interfaceAddr(n.Interface, n.Subnet6, pin)
		if err != nil {
			return nil, fmt.Errorf("network %q: %w", n.Name, err)
		}
		l := &v6Link{net: n, serverIP: ip, addrNote: note}
		byIface[n.Interface] = l
		links = append(links, l)
	}
	for _, n := range relayed {
		l := byIface[n.Interface]
		if n.Interface == "" && len(links) > 0 {
			l = links[0]
		}
		if l == nil {
			return nil, fmt.Errorf("network %q is relayed over IPv6, but no network with subnet6 is served on the interface its relays' packets arrive on (%q): metal needs an IPv6 address there for relays to send to and machines to fetch from",
				n.Name, n.Interface)
		}
		l.relayed = append(l.relayed, n)
	}
	return links, nil
}

// relayAgents are the network's relay agents of one family: DHCPv4's
// (v6 false) or DHCPv6's.
func relayAgents(n *site.Network, v6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.RelayAgents {
		if is6 := a.Is6() && !a.Is4In6(); is6 == v6 {
			out = append(out, a)
		}
	}
	return out
}

// httpOn6 is where machines of the link reach the HTTP server, and the
// listen address it needs beyond listen ("" when listen already covers
// it: the unspecified address, or the link's own).
func (l *v6Link) httpOn6(listen string) (base, more string, err error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", "", fmt.Errorf("listen address %q: %w", listen, err)
	}
	hostPort := net.JoinHostPort(l.serverIP.String(), port)
	switch a, err := netip.ParseAddr(host); {
	case host == "" || host == "::" || (err == nil && a == l.serverIP):
		return "http://" + hostPort, "", nil
	default:
		// 0.0.0.0 and IPv4 hosts do not listen on IPv6.
		return "http://" + hostPort, hostPort, nil
	}
}

// v6Servers are a link's router advertisements and DHCPv6 server.
type v6Servers struct {
	ra    *ra.Server
	dhcp6 *dhcp6.Server
}

func newV6Servers(l *v6Link, httpBase string, policy pxe.BootPolicy, log *slog.Logger) (v6Servers, error) {
	n := l.net
	log = log.With("network", n.Name)
	var relayed []dhcp6.RelayedLink
	for _, r := range l.relayed {
		relayed = append(relayed, dhcp6.RelayedLink{Prefix: r.Subnet6, Agents: relayAgents(r, true)})
	}
	d6, err := dhcp6.New(dhcp6.Config{Interface: n.Interface, ServerIP: l.serverIP, HTTPBaseURL: httpBase,
		DNS: n.DNS6, Lifetime: n.LeaseTime, Relayed: relayed, Logger: log}, policy)
	if err != nil {
		return v6Servers{}, fmt.Errorf("network %q: %w", n.Name, err)
	}
	// The prefix is on-link and metal no router: machines reach metal on
	// the link itself.
	adv, err := ra.New(ra.Config{Interface: n.Interface, Prefix: n.Subnet6, Logger: log})
	if err != nil {
		return v6Servers{}, fmt.Errorf("network %q: %w", n.Name, err)
	}
	return v6Servers{ra: adv, dhcp6: d6}, nil
}
