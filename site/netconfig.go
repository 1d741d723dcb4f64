package site

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/hashicorp/hcl/v2"
)

// A machine's network as its installed OS sets it up: cloud-init's
// NoCloud network-config (version 2), rendered from the site by
// NetworkConfig and written into the seed beside meta-data.
//
//	machine "db-1" {
//	  ...
//	  interface = "eno1"              # the boot NIC's name in the installed OS
//	  bond "bond0" {
//	    interfaces = ["eno1", "eno2"]
//	    mode       = "802.3ad"        # default active-backup
//	  }
//	  vlan "bond0.20" {
//	    id        = 20
//	    link      = "bond0"
//	    addresses = ["10.20.0.21/24"]
//	  }
//	  route {
//	    to  = "192.168.0.0/16"
//	    via = "10.10.0.254"
//	  }
//	}

// Bond is a bonded interface of a machine.
type Bond struct {
	Name       string
	Interfaces []string
	Mode       string
	DeclRange  hcl.Range
}

// VLAN is a tagged interface on one of a machine's interfaces.
type VLAN struct {
	Name      string
	ID        int
	Link      string
	Addresses []netip.Prefix
	DeclRange hcl.Range
}

// Route is a static route of a machine.
type Route struct {
	To        netip.Prefix
	Via       netip.Addr
	DeclRange hcl.Range
}

// BondModes are the bonding modes of Linux (and netplan).
var BondModes = []string{"balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"}

var (
	bondSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "interfaces", Required: true}, {Name: "mode"},
	}}
	vlanSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "id", Required: true}, {Name: "link", Required: true}, {Name: "addresses"},
	}}
	routeSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "to", Required: true}, {Name: "via", Required: true},
	}}
)

// subBlock is a block inside a machine block (bond, vlan, route,
// firmware), its content read once for all the machine block's instances.
type subBlock struct {
	block   *hcl.Block
	content *hcl.BodyContent
}

// subBlocks reads the blocks of content whose type has a schema.
func subBlocks(content *hcl.BodyContent, schemas map[string]*hcl.BodySchema) ([]subBlock, hcl.Diagnostics) {
	var out []subBlock
	var diags hcl.Diagnostics
	for _, b := range content.Blocks {
		schema := schemas[b.Type]
		if schema == nil {
			continue
		}
		c, d := b.Body.Content(schema)
		diags = append(diags, d...)
		if !d.HasErrors() {
			out = append(out, subBlock{b, c})
		}
	}
	return out, diags
}

var netSchemas = map[string]*hcl.BodySchema{"bond": bondSchema, "vlan": vlanSchema, "route": routeSchema}

// decodeNet reads m's bonds, vlans and routes for one instance and checks
// that they fit together: every VLAN's link and every interface named is
// declared (the boot interface, a bond, a bond's member or another VLAN).
func decodeNet(e *evaluator, m *Machine, blocks []subBlock) {
	bad := func(r hcl.Range, summary, format string, args ...any) {
		e.diags = append(e.diags, errorAt(r, summary, "Machine %q: %s", m.Name, fmt.Sprintf(format, args...)))
	}
	for _, nb := range blocks {
		attrs := nb.content.Attributes
		switch nb.block.Type {
		case "bond":
			b := Bond{Name: nb.block.Labels[0], Mode: "active-backup", DeclRange: nb.block.DefRange}
			b.Interfaces = e.strList(attrs["interfaces"])
			if a := attrs["mode"]; a != nil {
				if v, _, ok := e.str(a); ok {
					if !slices.Contains(BondModes, v) {
						bad(a.Expr.Range(), "Invalid bond mode", "bond %q: mode must be one of %v, got %q.", b.Name, BondModes, v)
					}
					b.Mode = v
				}
			}
			if len(b.Interfaces) == 0 && attrs["interfaces"] != nil {
				bad(attrs["interfaces"].Expr.Range(), "Empty bond", "bond %q names no interfaces.", b.Name)
			}
			m.Bonds = append(m.Bonds, b)
		case "vlan":
			v := VLAN{Name: nb.block.Labels[0], DeclRange: nb.block.DefRange}
			if id, ok := e.integer(attrs["id"], 1, 4094); ok {
				v.ID = id
			}
			v.Link, _, _ = e.str(attrs["link"])
			if a := attrs["addresses"]; a != nil {
				for _, s := range e.strList(a) {
					p, err := netip.ParsePrefix(s)
					if err != nil {
						bad(a.Expr.Range(), "Invalid address", "vlan %q: %q is not an address with its prefix length, such as 10.20.0.5/24.", v.Name, s)
						continue
					}
					v.Addresses = append(v.Addresses, p)
				}
			}
			m.VLANs = append(m.VLANs, v)
		case "route":
			r := Route{DeclRange: nb.block.DefRange}
			if s, _, ok := e.str(attrs["to"]); ok {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					bad(attrs["to"].Expr.Range(), "Invalid route", "route to %q: not a network such as 192.168.0.0/16.", s)
				}
				r.To = p.Masked()
			}
			if s, _, ok := e.str(attrs["via"]); ok {
				a, err := netip.ParseAddr(s)
				if err != nil {
					bad(attrs["via"].Expr.Range(), "Invalid route", "route via %q: not an IP address.", s)
				}
				r.Via = a
			}
			m.Routes = append(m.Routes, r)
		}
	}
	// Every name an interface is known by, and what declares it.
	declared := map[string]string{}
	if m.Interface != "" {
		declared[m.Interface] = "interface"
	}
	for _, b := range m.Bonds {
		if _, dup := declared[b.Name]; dup {
			bad(b.DeclRange, "Duplicate interface", "%q is declared twice.", b.Name)
		}
		declared[b.Name] = "bond"
	}
	for _, b := range m.Bonds {
		for _, member := range b.Interfaces {
			switch declared[member] {
			case "bond":
				bad(b.DeclRange, "Invalid bond", "bond %q: its member %q is a bond.", b.Name, member)
			case "member":
				bad(b.DeclRange, "Invalid bond", "bond %q: %q is already a member of a bond.", b.Name, member)
			}
			declared[member] = "member"
		}
	}
	for _, v := range m.VLANs {
		if _, dup := declared[v.Name]; dup {
			bad(v.DeclRange, "Duplicate interface", "%q is declared twice.", v.Name)
		}
		declared[v.Name] = "vlan"
	}
	for _, v := range m.VLANs {
		if v.Link == "" {
			continue
		}
		if _, ok := declared[v.Link]; !ok {
			bad(v.DeclRange, "Unknown interface",
				"vlan %q is on %q, which the machine does not declare: name it in interface, as a bond or a bond's member, or as another vlan.", v.Name, v.Link)
		}
	}
}

// NICNames are the physical interfaces m's network config names: the boot
// interface and the bonds' members. A plan that knows the machine's NICs
// from discovery checks them with CheckNICs.
func (m *Machine) NICNames() []string {
	var out []string
	if m.Interface != "" {
		out = append(out, m.Interface)
	}
	for _, b := range m.Bonds {
		for _, n := range b.Interfaces {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// CheckNICs says which interfaces m's network config names that are not
// among have (the NIC names discovery found); nil when all are.
func (m *Machine) CheckNICs(have []string) []string {
	var missing []string
	for _, n := range m.NICNames() {
		if !slices.Contains(have, n) {
			missing = append(missing, n)
		}
	}
	return missing
}

// HasNetworkConfig reports whether m's installed OS is given a network
// config: it has a fixed address, or declares bonds, VLANs or routes.
func (m *Machine) HasNetworkConfig() bool {
	return m.IP.IsValid() || m.IP6.IsValid() || len(m.Bonds) > 0 || len(m.VLANs) > 0 || len(m.Routes) > 0
}

// NetworkConfig renders m's NoCloud network-config (version 2, the
// netplan schema cloud-init reads) on network n: the machine's address
// (and IPv6 address) with n's prefix (and subnet6's), gateway (and
// gateway6), DNS (and dns6) and search domain on its first bond, or
// else on the NIC with its MAC; each VLAN with its addresses; each static
// route on the interface whose addresses hold its gateway. It returns nil
// when m has no network config (see HasNetworkConfig): the OS takes DHCP.
func (m *Machine) NetworkConfig(n *Network) map[string]any {
	if !m.HasNetworkConfig() {
		return nil
	}
	ethernets := map[string]any{}
	primary := "id0"
	boot := map[string]any{"match": map[string]any{"macaddress": m.MAC.String()}}
	if m.Interface != "" {
		primary = m.Interface
		boot["set-name"] = m.Interface
	}
	ethernets[primary] = boot
	ifaces := map[string]map[string]any{primary: boot}
	bonds := map[string]any{}
	for i, b := range m.Bonds {
		for _, member := range b.Interfaces {
			if _, ok := ethernets[member]; !ok {
				e := map[string]any{"dhcp4": false}
				ethernets[member] = e
				ifaces[member] = e
			}
		}
		bd := map[string]any{"interfaces": b.Interfaces, "parameters": map[string]any{"mode": b.Mode}}
		bonds[b.Name] = bd
		ifaces[b.Name] = bd
		if i == 0 {
			primary = b.Name
		}
	}
	nets := map[string][]netip.Prefix{}
	p := ifaces[primary]
	var addrs, dns []string
	var routes []map[string]any
	if m.IP.IsValid() && n != nil {
		pfx := netip.PrefixFrom(m.IP, n.Subnet.Bits())
		addrs = append(addrs, pfx.String())
		nets[primary] = []netip.Prefix{pfx}
		if n.Gateway.IsValid() {
			routes = append(routes, map[string]any{"to": "0.0.0.0/0", "via": n.Gateway.String()})
		}
		for _, a := range n.DNS {
			dns = append(dns, a.String())
		}
	} else {
		// An IPv6-only network has no DHCPv4 server to ask.
		p["dhcp4"] = n == nil || n.Subnet.IsValid()
	}
	if m.IP6.IsValid() && n != nil && n.Subnet6.IsValid() {
		pfx := netip.PrefixFrom(m.IP6, n.Subnet6.Bits())
		addrs = append(addrs, pfx.String())
		nets[primary] = append(nets[primary], pfx)
		if n.Gateway6.IsValid() {
			// gateway6, not a route to ::/0: cloud-init (22.4, Debian
			// 12's) renders that route for ifupdown as ::/64, a wrong
			// on-link route instead of the default one.
			p["gateway6"] = n.Gateway6.String()
		}
		for _, a := range n.DNS6 {
			dns = append(dns, a.String())
		}
	}
	if len(addrs) > 0 {
		p["addresses"] = addrs
		if len(routes) > 0 {
			p["routes"] = routes
		}
		ns := map[string]any{}
		if len(dns) > 0 {
			ns["addresses"] = dns
		}
		if n.Domain != "" {
			ns["search"] = []string{n.Domain}
		}
		if len(ns) > 0 {
			p["nameservers"] = ns
		}
	}
	vlans := map[string]any{}
	for _, v := range m.VLANs {
		vl := map[string]any{"id": v.ID, "link": v.Link}
		if len(v.Addresses) > 0 {
			var as []string
			for _, a := range v.Addresses {
				as = append(as, a.String())
			}
			vl["addresses"] = as
			nets[v.Name] = v.Addresses
		}
		vlans[v.Name] = vl
		ifaces[v.Name] = vl
	}
	for _, r := range m.Routes {
		on := primary
		for name, ps := range nets {
			for _, pf := range ps {
				if pf.Masked().Contains(r.Via) {
					on = name
				}
			}
		}
		routes, _ := ifaces[on]["routes"].([]map[string]any)
		ifaces[on]["routes"] = append(routes, map[string]any{"to": r.To.String(), "via": r.Via.String()})
	}
	out := map[string]any{"version": 2, "ethernets": ethernets}
	if len(bonds) > 0 {
		out["bonds"] = bonds
	}
	if len(vlans) > 0 {
		out["vlans"] = vlans
	}
	return out
}
