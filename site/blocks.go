package site

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/metal-dev/metal/internal/dhcpopt"
)

var siteSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "state"}, {Name: "listen"}, {Name: "ipxe_dir"}, {Name: "secureboot_dir"}, {Name: "unknown_machines"},
}}

func (l *loader) decodeSite(blocks []*hcl.Block, s *Site) hcl.Diagnostics {
	s.Settings = Settings{State: "file://.metal/state.db", Listen: ":8080", UnknownMachines: "discover"}
	if len(blocks) == 0 {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Missing site block",
			Detail: `A site file needs one site block naming the site, e.g. site "home" { }.`}}
	}
	var diags hcl.Diagnostics
	for _, extra := range blocks[1:] {
		diags = append(diags, errorAt(extra.DefRange, "Duplicate site block",
			"A file describes one site; the site block is already at %s.", where(blocks[0].DefRange)))
	}
	b := blocks[0]
	s.Name = b.Labels[0]
	s.Settings.DeclRange = b.DefRange
	content, moreDiags := b.Body.Content(siteSchema)
	diags = append(diags, moreDiags...)
	e := &evaluator{ctx: l.ctx}
	if v, _, ok := e.str(content.Attributes["state"]); ok {
		s.Settings.State = v
		if !strings.HasPrefix(v, "file://") && !strings.HasPrefix(v, "etcd://") {
			diags = append(diags, errorAt(content.Attributes["state"].Expr.Range(), "Invalid state URL",
				"state must be file://PATH (one metal server) or etcd://HOST:PORT[,HOST:PORT]/PREFIX (several), got %q.", v))
		}
	}
	if v, _, ok := e.str(content.Attributes["listen"]); ok {
		s.Settings.Listen = v
	}
	if v, _, ok := e.str(content.Attributes["ipxe_dir"]); ok {
		s.Settings.IPXEDir = v
	}
	if v, _, ok := e.str(content.Attributes["secureboot_dir"]); ok {
		s.Settings.SecureBootDir = v
	}
	if a := content.Attributes["unknown_machines"]; a != nil {
		if v, _, ok := e.str(a); ok {
			if v != "discover" && v != "ignore" {
				diags = append(diags, errorAt(a.Expr.Range(), "Invalid unknown_machines",
					`unknown_machines must be "discover" (boot unknown MACs into the discovery agent) or "ignore" (stay silent towards them), got %q.`, v))
			}
			s.Settings.UnknownMachines = v
		}
	}
	return append(diags, e.diags...)
}

var networkSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "interface"}, {Name: "subnet"}, {Name: "subnet6"}, {Name: "gateway"}, {Name: "dns"},
	{Name: "gateway6"}, {Name: "dns6"},
	{Name: "domain"}, {Name: "pool"}, {Name: "mode"}, {Name: "lease_time"}, {Name: "relay_agents"},
	{Name: "ntp"}, {Name: "mtu"}, {Name: "routes"}, {Name: "options"},
}}

func (l *loader) decodeNetworks(blocks []*hcl.Block, s *Site) hcl.Diagnostics {
	var diags hcl.Diagnostics
	s.networkByName = map[string]*Network{}
	for _, b := range blocks {
		n := &Network{Name: b.Labels[0], Mode: ModeDHCP, LeaseTime: time.Hour, DeclRange: b.DefRange, ranges: map[string]hcl.Range{}}
		if prev, ok := s.networkByName[n.Name]; ok {
			diags = append(diags, errorAt(b.LabelRanges[0], "Duplicate network",
				"Network %q is already declared at %s.", n.Name, where(prev.DeclRange)))
			continue
		}
		content, moreDiags := b.Body.Content(networkSchema)
		diags = append(diags, moreDiags...)
		e := &evaluator{ctx: l.ctx}
		for name, a := range content.Attributes {
			n.ranges[name] = a.Expr.Range()
		}
		n.Interface, _, _ = e.str(content.Attributes["interface"])
		n.Domain, _, _ = e.str(content.Attributes["domain"])
		if a := content.Attributes["subnet6"]; a != nil {
			if v, _, ok := e.str(a); ok {
				p, err := netip.ParsePrefix(v)
				switch {
				case err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().Zone() != "":
					diags = append(diags, errorAt(a.Expr.Range(), "Invalid IPv6 subnet",
						"subnet6 must be an IPv6 network in CIDR notation such as 2001:db8:0:1::/64, got %q.", v))
				case p.Masked() != p:
					diags = append(diags, errorAt(a.Expr.Range(), "Invalid IPv6 subnet",
						"%q has host bits set; did you mean %s?", v, p.Masked()))
				default:
					n.Subnet6 = p
				}
			}
		}
		if a := content.Attributes["subnet"]; a != nil {
			if v, _, ok := e.str(a); ok {
				p, err := netip.ParsePrefix(v)
				switch {
				case err != nil || !p.Addr().Is4():
					diags = append(diags, errorAt(a.Expr.Range(), "Invalid subnet",
						"subnet must be an IPv4 network in CIDR notation such as 10.10.0.0/24, got %q.", v))
				case p.Masked() != p:
					diags = append(diags, errorAt(a.Expr.Range(), "Invalid subnet",
						"%q has host bits set; did you mean %s?", v, p.Masked()))
				default:
					n.Subnet = p
				}
			}
		}
		if content.Attributes["subnet"] == nil && content.Attributes["subnet6"] == nil {
			diags = append(diags, errorAt(b.DefRange, "Network without a subnet",
				"Network %q needs subnet (IPv4), subnet6 (IPv6) or both.", n.Name))
		}
		if a := content.Attributes["gateway"]; a != nil {
			n.Gateway = e.addr(a)
		}
		n.DNS = e.addrList(content.Attributes["dns"], "Invalid DNS server")
		if a := content.Attributes["gateway6"]; a != nil {
			n.Gateway6 = e.addr6(a, "Invalid IPv6 gateway")
		}
		for _, a := range e.strList(content.Attributes["dns6"]) {
			if addr, ok := parseAddr6(a); ok {
				n.DNS6 = append(n.DNS6, addr)
			} else {
				e.diags = append(e.diags, errorAt(content.Attributes["dns6"].Expr.Range(), "Invalid IPv6 DNS server",
					"%q is not an IPv6 address such as 2001:db8::53; IPv4 name servers go in dns.", a))
			}
		}
		// DHCPv6 relays (of subnet6) by their IPv6 addresses.
		n.RelayAgents = e.addrListOf(content.Attributes["relay_agents"], "Invalid relay agent", true)
		n.NTP = e.addrList(content.Attributes["ntp"], "Invalid NTP server")
		if a := content.Attributes["mtu"]; a != nil {
			n.MTU, _ = e.integer(a, 68, 65535)
		}
		n.Routes = e.routes(content.Attributes["routes"])
		n.Options = e.options(content.Attributes["options"])
		if a := content.Attributes["pool"]; a != nil {
			if v, _, ok := e.str(a); ok {
				start, end, err := parsePool(v)
				if err != nil {
					diags = append(diags, errorAt(a.Expr.Range(), "Invalid pool", "%s.", err))
				} else {
					n.PoolStart, n.PoolEnd = start, end
				}
			}
		}
		if a := content.Attributes["mode"]; a != nil {
			if v, _, ok := e.str(a); ok {
				if v != ModeDHCP && v != ModeProxy && v != ModeOff {
					diags = append(diags, errorAt(a.Expr.Range(), "Invalid network mode",
						`mode must be "dhcp" (metal hands out addresses), "proxy" (another DHCP server does; metal adds boot information) or "off", got %q.`, v))
				}
				n.Mode = v
			}
		}
		if a := content.Attributes["lease_time"]; a != nil {
			if d, ok := e.duration(a, time.Minute, 365*24*time.Hour); ok {
				n.LeaseTime = d
			}
		}
		diags = append(diags, e.diags...)
		s.Networks = append(s.Networks, n)
		s.networkByName[n.Name] = n
	}
	return diags
}

// parsePool parses "10.10.0.100-10.10.0.199".
func parsePool(v string) (netip.Addr, netip.Addr, error) {
	a, b, ok := strings.Cut(v, "-")
	if !ok {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("pool must be a range FIRST-LAST such as 10.10.0.100-10.10.0.199, got %q", v)
	}
	start, err1 := netip.ParseAddr(strings.TrimSpace(a))
	end, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || !start.Is4() || !end.Is4() {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("pool %q must be two IPv4 addresses FIRST-LAST", v)
	}
	if end.Less(start) {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("pool %q ends before it starts", v)
	}
	return start, end, nil
}

func (e *evaluator) addr(a *hcl.Attribute) netip.Addr {
	v, _, ok := e.str(a)
	if !ok {
		return netip.Addr{}
	}
	addr, err := netip.ParseAddr(v)
	if err != nil || !addr.Is4() {
		e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid IP address", "%q is not an IPv4 address such as 10.10.0.11.", v))
		return netip.Addr{}
	}
	return addr
}

// addr6 evaluates a global or link-local IPv6 address (no zone: the
// network's interface is the zone).
func (e *evaluator) addr6(a *hcl.Attribute, summary string) netip.Addr {
	v, _, ok := e.str(a)
	if !ok {
		return netip.Addr{}
	}
	addr, ok := parseAddr6(v)
	if !ok {
		e.diags = append(e.diags, errorAt(a.Expr.Range(), summary, "%q is not an IPv6 address such as 2001:db8::1 or fe80::1.", v))
	}
	return addr
}

func parseAddr6(v string) (netip.Addr, bool) {
	addr, err := netip.ParseAddr(v)
	if err != nil || !addr.Is6() || addr.Is4In6() || addr.Zone() != "" || addr.IsUnspecified() || addr.IsMulticast() {
		return netip.Addr{}, false
	}
	return addr, true
}

// routes evaluates classless static routes: a map of destination
// network to router, { "10.30.0.0/16" = "10.21.1.1" }.
func (e *evaluator) routes(a *hcl.Attribute) []dhcpopt.Route {
	m := e.strMap(a)
	var out []dhcpopt.Route
	for _, dest := range slices.Sorted(maps.Keys(m)) {
		p, err := netip.ParsePrefix(dest)
		if err != nil || !p.Addr().Is4() || p.Masked() != p {
			e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid route",
				"%q is not an IPv4 network such as 10.30.0.0/16 (host bits clear).", dest))
			continue
		}
		via, err := netip.ParseAddr(m[dest])
		if err != nil || !via.Is4() {
			e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid route",
				"route %s: %q is not an IPv4 router address.", dest, m[dest]))
			continue
		}
		out = append(out, dhcpopt.Route{Dest: p, Via: via})
	}
	return out
}

// options evaluates a network's or machine's options map: option name or
// code to value, each value checked against the option's type (lists as
// comma-separated strings).
func (e *evaluator) options(a *hcl.Attribute) []Option {
	m := e.strMap(a)
	var out []Option
	seen := map[uint8]string{}
	for _, key := range slices.Sorted(maps.Keys(m)) {
		d, err := dhcpopt.Lookup(key)
		if err == nil {
			if prev, ok := seen[d.Code]; ok {
				err = fmt.Errorf("option %q is option %d, as %q is", key, d.Code, prev)
			}
		}
		var v []byte
		if err == nil {
			v, err = dhcpopt.Encode(d, m[key])
		}
		if err != nil {
			e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid DHCP option", "%s.", err))
			continue
		}
		seen[d.Code] = key
		out = append(out, Option{Code: d.Code, Name: key, Value: v})
	}
	slices.SortFunc(out, func(x, y Option) int { return int(x.Code) - int(y.Code) })
	return out
}

// addrList evaluates a list of IPv4 addresses, reporting each bad one.
func (e *evaluator) addrList(a *hcl.Attribute, summary string) []netip.Addr {
	return e.addrListOf(a, summary, false)
}

// addrListOf is addrList taking IPv6 addresses too when v6 is set.
func (e *evaluator) addrListOf(a *hcl.Attribute, summary string, v6 bool) []netip.Addr {
	var out []netip.Addr
	for _, v := range e.strList(a) {
		addr, err := netip.ParseAddr(v)
		switch {
		case v6 && (err != nil || addr.Zone() != "" || addr.Is4In6()):
			e.diags = append(e.diags, errorAt(a.Expr.Range(), summary, "%q is not an IPv4 or IPv6 address.", v))
			continue
		case !v6 && (err != nil || !addr.Is4()):
			e.diags = append(e.diags, errorAt(a.Expr.Range(), summary, "%q is not an IPv4 address.", v))
			continue
		}
		out = append(out, addr)
	}
	return out
}

func (e *evaluator) duration(a *hcl.Attribute, min, max time.Duration) (time.Duration, bool) {
	v, _, ok := e.str(a)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid duration", "%q is not a duration such as \"30s\", \"12h\".", v))
		return 0, false
	}
	if d < min || d > max {
		e.diags = append(e.diags, errorAt(a.Expr.Range(), "Duration out of range", "%s must be between %s and %s.", a.Name, min, max))
		return 0, false
	}
	return d, true
}

var imageSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "kernel"}, {Name: "kernel_checksum"}, {Name: "initrd"}, {Name: "initrd_checksums"},
	{Name: "cmdline"}, {Name: "disk"}, {Name: "checksum"}, {Name: "format"},
	{Name: "ready"}, {Name: "ready_timeout"},
}}

func (l *loader) decodeImages(blocks []*hcl.Block, s *Site) hcl.Diagnostics {
	var diags hcl.Diagnostics
	s.imageByName = map[string]*Image{}
	for _, b := range blocks {
		im := &Image{Name: b.Labels[0], DeclRange: b.DefRange, ranges: map[string]hcl.Range{}}
		if prev, ok := s.imageByName[im.Name]; ok {
			diags = append(diags, errorAt(b.LabelRanges[0], "Duplicate image",
				"Image %q is already declared at %s.", im.Name, where(prev.DeclRange)))
			continue
		}
		content, moreDiags := b.Body.Content(imageSchema)
		diags = append(diags, moreDiags...)
		e := &evaluator{ctx: l.ctx}
		for name, a := range content.Attributes {
			im.ranges[name] = a.Expr.Range()
		}
		im.Kernel.URL, im.Kernel.Sensitive = e.secretStr(content.Attributes["kernel"])
		im.Kernel.Checksum, _, _ = e.str(content.Attributes["kernel_checksum"])
		im.Cmdline, im.CmdlineSensitive = e.secretStr(content.Attributes["cmdline"])
		im.Disk.URL, im.Disk.Sensitive = e.secretStr(content.Attributes["disk"])
		im.Disk.Checksum, _, _ = e.str(content.Attributes["checksum"])
		im.Format, _, _ = e.str(content.Attributes["format"])
		if a := content.Attributes["initrd"]; a != nil {
			// A single initrd may be written as a string.
			if s, sensitive, ok := (&evaluator{ctx: l.ctx, secretOK: true}).str(a); ok {
				im.Initrd = []Source{{URL: s, Sensitive: sensitive}}
			} else {
				list, sensitive := e.secretStrList(a)
				for _, u := range list {
					im.Initrd = append(im.Initrd, Source{URL: u, Sensitive: sensitive})
				}
			}
		}
		if a := content.Attributes["initrd_checksums"]; a != nil {
			sums := e.strList(a)
			if len(sums) != len(im.Initrd) {
				diags = append(diags, errorAt(a.Expr.Range(), "Checksum count mismatch",
					"initrd_checksums has %d entries for %d initrd files; give one per initrd, in order.", len(sums), len(im.Initrd)))
			} else {
				for i := range sums {
					im.Initrd[i].Checksum = sums[i]
				}
			}
		}
		if im.Format == "" {
			im.Format = formatFromName(im.Disk.URL)
		}
		im.Ready = Readiness{Kind: ReadyCloudInit}
		if a := content.Attributes["ready"]; a != nil {
			if v, _, ok := e.str(a); ok {
				r, err := ParseReadiness(v)
				if err != nil {
					diags = append(diags, errorAt(a.Expr.Range(), "Invalid readiness check", "Image %q: %v.", im.Name, err))
				} else {
					im.Ready = r
				}
			}
		}
		im.ReadyTimeout = DefaultReadyTimeout
		if a := content.Attributes["ready_timeout"]; a != nil {
			if d, ok := e.duration(a, 10*time.Second, 24*time.Hour); ok {
				im.ReadyTimeout = d
			}
		}
		diags = append(diags, e.diags...)
		s.Images = append(s.Images, im)
		s.imageByName[im.Name] = im
	}
	return diags
}

// formatFromName infers a disk image's compression from its file name.
func formatFromName(name string) string {
	switch {
	case name == "":
		return ""
	case strings.HasSuffix(name, ".gz"):
		return "gz"
	case strings.HasSuffix(name, ".zst"):
		return "zst"
	case strings.HasSuffix(name, ".xz"):
		return "xz"
	case strings.HasSuffix(name, ".qcow2"):
		return "qcow2"
	}
	return "raw"
}

var rolloutSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "canary"}, {Name: "batch_size"}, {Name: "max_failures"}, {Name: "by"}, {Name: "stagger"},
}}

func (l *loader) decodeRollout(blocks []*hcl.Block, s *Site) hcl.Diagnostics {
	// Defaults are cautious: one canary, small batches, halt on first failure.
	s.Rollout = Rollout{Canary: 1, BatchSize: 5, MaxFailures: 0, Stagger: 2 * time.Second}
	if len(blocks) == 0 {
		return nil
	}
	var diags hcl.Diagnostics
	for _, extra := range blocks[1:] {
		diags = append(diags, errorAt(extra.DefRange, "Duplicate rollout block",
			"A site has one rollout block; the first is at %s.", where(blocks[0].DefRange)))
	}
	b := blocks[0]
	s.Rollout.DeclRange = b.DefRange
	content, moreDiags := b.Body.Content(rolloutSchema)
	diags = append(diags, moreDiags...)
	e := &evaluator{ctx: l.ctx}
	if v, ok := e.integer(content.Attributes["canary"], 0, 1000); ok {
		s.Rollout.Canary = v
	}
	if a := content.Attributes["batch_size"]; a != nil {
		if v, _, ok := (&evaluator{ctx: l.ctx}).str(a); ok && strings.HasSuffix(v, "%") {
			var pct int
			if _, err := fmt.Sscanf(v, "%d%%", &pct); err != nil || pct < 1 || pct > 100 || fmt.Sprintf("%d%%", pct) != v {
				diags = append(diags, errorAt(a.Expr.Range(), "Invalid batch_size", "batch_size must be a count (5) or a percentage from 1%% to 100%% (\"20%%\"), got %q.", v))
			} else {
				s.Rollout.BatchPercent, s.Rollout.BatchSize = pct, 0
			}
		} else if v, ok := e.integer(a, 1, 100_000); ok {
			s.Rollout.BatchSize = v
		}
	}
	if v, ok := e.integer(content.Attributes["max_failures"], 0, 100_000); ok {
		s.Rollout.MaxFailures = v
	}
	if v, _, ok := e.str(content.Attributes["by"]); ok {
		s.Rollout.By = v
	}
	if a := content.Attributes["stagger"]; a != nil {
		if d, ok := e.duration(a, 0, time.Hour); ok {
			s.Rollout.Stagger = d
		}
	}
	return append(diags, e.diags...)
}

var fenceSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "bmc"}}}

func (l *loader) decodeFence(blocks []*hcl.Block, s *Site) hcl.Diagnostics {
	if len(blocks) == 0 {
		return nil
	}
	var diags hcl.Diagnostics
	for _, extra := range blocks[1:] {
		diags = append(diags, errorAt(extra.DefRange, "Duplicate fence block",
			"A site has one fence block (the primary's host); the first is at %s.", where(blocks[0].DefRange)))
	}
	b := blocks[0]
	content, moreDiags := b.Body.Content(fenceSchema)
	diags = append(diags, moreDiags...)
	if moreDiags.HasErrors() {
		return diags
	}
	if len(content.Blocks) != 1 {
		return append(diags, errorAt(b.DefRange, "Fence without one bmc block",
			"The fence block names the primary host's BMC in one bmc block, as a machine names its own (protocol, address, username, password)."))
	}
	bb := content.Blocks[0]
	bmcContent, moreDiags := bb.Body.Content(bmcSchema)
	diags = append(diags, moreDiags...)
	if moreDiags.HasErrors() {
		return diags
	}
	e := &evaluator{ctx: l.ctx}
	s.Fence = &Fence{BMC: decodeBMC(e, bb, bmcContent), DeclRange: b.DefRange}
	return append(diags, e.diags...)
}
