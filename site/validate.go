package site

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// validate checks the decoded site as a whole: references, uniqueness,
// addresses against their networks. It reports every problem it finds.
func validate(s *Site) hcl.Diagnostics {
	var diags hcl.Diagnostics
	diags = append(diags, validateNetworks(s)...)
	diags = append(diags, validateImages(s)...)
	diags = append(diags, validateMachines(s)...)
	diags = append(diags, validateRollout(s)...)
	if s.Fence != nil && s.Fence.BMC != nil {
		diags = append(diags, validateBMC("The fence", s.Fence.BMC)...)
	}
	diags = append(diags, validateSensitiveLabels(s)...)
	return diags
}

// validateNetwork6 checks n's IPv6 settings: they need subnet6, and its
// machines can only reach a router on their own link.
func validateNetwork6(n *Network) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if !n.Subnet6.IsValid() {
		for _, attr := range []string{"gateway6", "dns6"} {
			if r, set := n.ranges[attr]; set {
				diags = append(diags, errorAt(r, "IPv6 setting on a network without subnet6",
					"Network %q has no subnet6: %s is an IPv6 setting for the machines' ip6 addresses; declare subnet6 too, or drop it.", n.Name, attr))
			}
		}
		return diags
	}
	g := n.Gateway6
	switch {
	case !g.IsValid():
	case !g.IsLinkLocalUnicast() && !n.Subnet6.Contains(g):
		diags = append(diags, errorAt(rangeOr(n.ranges, "gateway6", n.DeclRange), "IPv6 gateway off the link",
			"Network %q: gateway6 %s is neither inside its subnet6 %s nor a link-local address (fe80::/10); a machine can only use a router on its own link.", n.Name, g, n.Subnet6))
	case g == n.Subnet6.Addr():
		diags = append(diags, errorAt(rangeOr(n.ranges, "gateway6", n.DeclRange), "IPv6 gateway is the subnet-router anycast address",
			"Network %q: gateway6 %s is the subnet-router anycast address of %s; name the router's own address.", n.Name, g, n.Subnet6))
	}
	return diags
}

func validateNetworks(s *Site) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for i, n := range s.Networks {
		if n.Mode != ModeOff && n.Interface == "" && len(n.RelayAgents) == 0 {
			diags = append(diags, errorAt(n.DeclRange, "Network has no interface",
				"Network %q: set interface = \"NAME\" (the NIC metal serves DHCP on) or relay_agents = [...] when requests arrive through a relay; or mode = \"off\".", n.Name))
		}
		diags = append(diags, validateNetwork6(n)...)
		if !n.Subnet.IsValid() {
			// Reported, or an IPv6-only network, where IPv4's settings
			// have nothing to apply to.
			for _, attr := range []string{"gateway", "pool", "routes"} {
				if _, set := n.ranges[attr]; set && n.Subnet6.IsValid() {
					diags = append(diags, errorAt(n.ranges[attr], "IPv4 setting on an IPv6-only network",
						"Network %q has no subnet (IPv4), only subnet6 %s: %s is an IPv4 setting; declare subnet too, or drop it.", n.Name, n.Subnet6, attr))
				}
			}
			for _, r := range n.RelayAgents {
				if r.Is4() && n.Subnet6.IsValid() {
					diags = append(diags, errorAt(rangeOr(n.ranges, "relay_agents", n.DeclRange), "IPv4 relay agent on an IPv6-only network",
						"Network %q has no subnet (IPv4), only subnet6 %s: relay agent %s is an IPv4 address; list its DHCPv6 relays by their IPv6 addresses, or declare subnet too.", n.Name, n.Subnet6, r))
				}
			}
			continue
		}
		if n.Gateway.IsValid() && !n.Subnet.Contains(n.Gateway) {
			diags = append(diags, errorAt(rangeOr(n.ranges, "gateway", n.DeclRange), "Gateway outside subnet",
				"Network %q: gateway %s is not inside its subnet %s.", n.Name, n.Gateway, n.Subnet))
		}
		if n.PoolStart.IsValid() {
			r := rangeOr(n.ranges, "pool", n.DeclRange)
			switch {
			case !n.Subnet.Contains(n.PoolStart) || !n.Subnet.Contains(n.PoolEnd):
				diags = append(diags, errorAt(r, "Pool outside subnet",
					"Network %q: pool %s-%s is not inside its subnet %s.", n.Name, n.PoolStart, n.PoolEnd, n.Subnet))
			case n.InPool(n.Subnet.Addr()) || n.InPool(broadcast(n.Subnet)):
				diags = append(diags, errorAt(r, "Pool includes reserved address",
					"Network %q: the pool must not include the network address %s or the broadcast address %s.", n.Name, n.Subnet.Addr(), broadcast(n.Subnet)))
			case n.InPool(n.Gateway):
				diags = append(diags, errorAt(r, "Pool includes the gateway",
					"Network %q: gateway %s lies inside the pool %s-%s; shrink the pool.", n.Name, n.Gateway, n.PoolStart, n.PoolEnd))
			}
		}
		for _, r := range n.Routes {
			if !n.Subnet.Contains(r.Via) {
				diags = append(diags, errorAt(rangeOr(n.ranges, "routes", n.DeclRange), "Route's router outside subnet",
					"Network %q: route %s goes by %s, which is not inside the subnet %s; a machine can only use a router on its own network.", n.Name, r.Dest, r.Via, n.Subnet))
			}
		}
		for _, o := range s.Networks[:i] {
			if !o.Subnet.IsValid() || o.Interface != n.Interface || n.Interface == "" {
				continue
			}
			if o.Subnet.Overlaps(n.Subnet) {
				diags = append(diags, errorAt(rangeOr(n.ranges, "subnet", n.DeclRange), "Overlapping subnets",
					"Network %q (%s) overlaps network %q (%s) on interface %q; metal could not tell which one a machine is on.",
					n.Name, n.Subnet, o.Name, o.Subnet, n.Interface))
			}
		}
	}
	return diags
}

func addrsOrNone(as []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return strings.Join(out, ", ")
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	bits := p.Bits()
	for i := bits; i < 32; i++ {
		a[i/8] |= 1 << (7 - uint(i%8))
	}
	return netip.AddrFrom4(a)
}

var checksumRe = regexp.MustCompile(`^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$`)

func isRemoteURL(u string) bool {
	for _, p := range []string{"http://", "https://", "sftp://"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

func validateImages(s *Site) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, im := range s.Images {
		if im.Kernel.URL == "" && im.Disk.URL == "" {
			diags = append(diags, errorAt(im.DeclRange, "Empty image",
				"Image %q needs a disk (written by the install agent) or a kernel (booted over the network), or both.", im.Name))
		}
		if im.Kernel.URL == "" && len(im.Initrd) > 0 {
			diags = append(diags, errorAt(rangeOr(im.ranges, "initrd", im.DeclRange), "Initrd without kernel",
				"Image %q has an initrd but no kernel to boot it with.", im.Name))
		}
		check := func(attr, sumAttr string, src Source) {
			if src.URL == "" {
				return
			}
			if msg := checkSourceURL(src.URL); msg != "" {
				diags = append(diags, errorAt(rangeOr(im.ranges, attr, im.DeclRange), "Invalid source", "Image %q: %s", im.Name, msg))
				return
			}
			switch {
			case src.Checksum == "" && src.Remote():
				diags = append(diags, errorAt(rangeOr(im.ranges, attr, im.DeclRange), "Missing checksum",
					"Image %q: %s is fetched over the network, so it needs a checksum: set %s = \"sha256:<hex>\" (sha256sum prints it).", im.Name, src.URL, sumAttr))
			case src.Checksum != "" && !checksumRe.MatchString(src.Checksum):
				diags = append(diags, errorAt(rangeOr(im.ranges, sumAttr, im.DeclRange), "Malformed checksum",
					"Image %q: checksum must be \"sha256:\" and 64 hex digits, or \"sha512:\" and 128, in lower case.", im.Name))
			}
		}
		check("kernel", "kernel_checksum", im.Kernel)
		check("disk", "checksum", im.Disk)
		for _, src := range im.Initrd {
			check("initrd", "initrd_checksums", src)
		}
		switch im.Format {
		case "", "raw", "gz", "zst", "xz", "qcow2":
		default:
			diags = append(diags, errorAt(rangeOr(im.ranges, "format", im.DeclRange), "Unknown image format",
				"Image %q: format must be raw, gz, zst, xz or qcow2, got %q.", im.Name, im.Format))
		}
	}
	return diags
}

// checkSourceURL returns why u is not a usable source, or "".
func checkSourceURL(u string) string {
	if !strings.Contains(u, "://") {
		return "" // a path relative to the site file
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Sprintf("%q is not a valid URL: %v.", u, err)
	}
	switch p.Scheme {
	case "http", "https", "sftp":
		if p.Host == "" {
			return fmt.Sprintf("%q has no host.", u)
		}
	case "file":
	default:
		return fmt.Sprintf("%q: scheme %q is not supported; use http, https, sftp or file.", u, p.Scheme)
	}
	return ""
}

var (
	nameRe     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$`)
	hostnameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
)

func validateMachines(s *Site) hcl.Diagnostics {
	var diags hcl.Diagnostics
	// Each map remembers the first machine holding a value.
	names := make(map[string]*Machine, len(s.Machines))
	macs := make(map[string]*Machine, len(s.Machines))
	ips := make(map[netip.Addr]*Machine, len(s.Machines))
	hostnames := make(map[string]*Machine, len(s.Machines))
	ports := map[string]*Machine{}
	dup := func(first *Machine, m *Machine, attr, what, value string) {
		diags = append(diags, errorAt(m.Range(attr), "Duplicate "+what,
			"Machine %q has %s %s, already used by machine %q (%s).", m.Name, what, value, first.Name, where(first.Range(attr))))
	}
	for _, m := range s.Machines {
		if !nameRe.MatchString(m.Name) {
			diags = append(diags, errorAt(m.Range("name"), "Invalid machine name",
				"%q is not a valid machine name: use up to 63 letters, digits, dots, dashes and underscores, starting with a letter or digit.", m.Name))
		}
		dupName := false
		if first, ok := names[m.Name]; ok {
			dup(first, m, "name", "name", m.Name)
			dupName = true
		} else {
			names[m.Name] = m
		}
		if m.MAC != nil {
			key := m.MAC.String()
			if first, ok := macs[key]; ok {
				dup(first, m, "mac", "MAC address", key)
			} else {
				macs[key] = m
			}
		}
		if m.IP.IsValid() {
			if first, ok := ips[m.IP]; ok {
				dup(first, m, "ip", "IP address", m.IP.String())
			} else {
				ips[m.IP] = m
			}
		}
		if m.IP6.IsValid() {
			if first, ok := ips[m.IP6]; ok {
				dup(first, m, "ip6", "IPv6 address", m.IP6.String())
			} else {
				ips[m.IP6] = m
			}
		}
		if !hostnameRe.MatchString(m.Hostname) || len(m.Hostname) > 253 {
			diags = append(diags, errorAt(m.Range("hostname"), "Invalid hostname",
				"Machine %q: %q is not a valid hostname (letters, digits and dashes, dot-separated); set hostname = \"...\".", m.Name, m.Hostname))
		} else if first, ok := hostnames[strings.ToLower(m.Hostname)]; ok && !dupName {
			// A duplicate name already explains a hostname derived from it.
			dup(first, m, "hostname", "hostname", m.Hostname)
		} else {
			hostnames[strings.ToLower(m.Hostname)] = m
		}
		diags = append(diags, validateMachineNetwork(s, m)...)
		if p := m.SwitchPort; p != nil {
			if n := s.Network(m.Network); n != nil && !slices.Contains(n.RelayAgents, p.Relay) {
				diags = append(diags, errorAt(m.Range("switch_port"), "Switch port behind an undeclared relay",
					"Machine %q: its switch port is on relay %s, which is not one of network %q's relay_agents (%s); metal drops what undeclared relays forward.",
					m.Name, p.Relay, n.Name, addrsOrNone(n.RelayAgents)))
			}
			key := p.Relay.String() + " " + p.CircuitID
			if first, ok := ports[key]; ok {
				dup(first, m, "switch_port", "switch port", fmt.Sprintf("%s circuit %q", p.Relay, p.CircuitID))
			} else {
				ports[key] = m
			}
		}
		if m.Image != "" && s.Image(m.Image) == nil {
			diags = append(diags, errorAt(m.Range("image"), "Unknown image",
				"Machine %q refers to image %q, which is not declared. Declared images: %s.", m.Name, m.Image, listNames(s.imageByName)))
		} else if im := s.Image(m.Image); im != nil && im.Disk.URL != "" && !m.IP.IsValid() &&
			(im.Ready.Kind == ReadyTCP || im.Ready.Kind == ReadyHTTP) {
			diags = append(diags, errorAt(m.Range("image"), "Readiness probe without an address",
				"Machine %q takes a pool address, but image %q is checked with ready = %q, which metal probes at the machine's address: declare its ip.", m.Name, im.Name, im.Ready.String()))
		}
		if m.BMC != nil {
			diags = append(diags, validateBMC(fmt.Sprintf("Machine %q", m.Name), m.BMC)...)
		}
		diags = append(diags, validateHardware(m)...)
		diags = append(diags, validateFirmware(m)...)
		diags = append(diags, validateRAID(m)...)
		if m.Boot == BootVirtualMedia {
			diags = append(diags, validateVirtualMedia(m)...)
		}
	}
	return diags
}

// validateVirtualMedia: a machine booted from virtual media takes no DHCP
// lease, so its address is declared, and its BMC speaks Redfish, which
// has the virtual media actions.
func validateVirtualMedia(m *Machine) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if !m.IP.IsValid() {
		diags = append(diags, errorAt(m.Range("boot"), "Virtual media without an address",
			"Machine %q boots from virtual media, where no DHCP server answers it: declare its ip (its network's gateway is its route to metal).", m.Name))
	}
	switch {
	case m.BMC == nil:
		diags = append(diags, errorAt(m.Range("boot"), "Virtual media without a BMC",
			"Machine %q boots from virtual media, which its BMC attaches: add a bmc block with protocol = \"redfish\".", m.Name))
	case m.BMC.Protocol == ProtocolIPMI:
		diags = append(diags, errorAt(m.Range("boot"), "Virtual media needs Redfish",
			"Machine %q boots from virtual media, but IPMI has no standard way to attach it; use protocol = \"redfish\" (or \"auto\") if the BMC speaks it.", m.Name))
	}
	return diags
}

// biosNameRe is what a BIOS attribute name may be: Redfish AttributeNames
// are identifiers (letters, digits, underscores; some vendors use dots).
var biosNameRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.]{0,127}$`)

// validateHardware checks the shapes of boot_mode and bios; whether the
// BMC knows an attribute and allows its value is for plan to ask the BMC.
func validateHardware(m *Machine) hcl.Diagnostics {
	var diags hcl.Diagnostics
	switch m.BootMode {
	case "", BootModeUEFI, BootModeLegacy:
	default:
		diags = append(diags, errorAt(m.Range("boot_mode"), "Invalid boot mode",
			`Machine %q: boot_mode must be "uefi" or "legacy", got %q.`, m.Name, m.BootMode))
	}
	names := make([]string, 0, len(m.BIOS))
	for k := range m.BIOS {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !biosNameRe.MatchString(k) {
			diags = append(diags, errorAt(m.Range("bios"), "Invalid BIOS attribute name",
				"Machine %q: %q is not a BIOS attribute name; use the BMC's own AttributeName, such as ProcVirtualization.", m.Name, k))
		}
	}
	if _, ok := m.BIOS["BootMode"]; ok && m.BootMode != "" {
		diags = append(diags, errorAt(m.Range("bios"), "Boot mode given twice",
			"Machine %q sets both boot_mode and bios.BootMode; keep one.", m.Name))
	}
	if m.BootMode == "" && len(m.BIOS) == 0 {
		return diags
	}
	attr := "bios"
	if m.BootMode != "" {
		attr = "boot_mode"
	}
	switch {
	case m.BMC == nil:
		diags = append(diags, errorAt(m.Range(attr), "BIOS settings without a BMC",
			"Machine %q declares %s, which metal sets through the machine's BMC; add a bmc block with protocol = \"redfish\".", m.Name, attr))
	case m.BMC.Protocol == ProtocolIPMI:
		diags = append(diags, errorAt(m.Range(attr), "BIOS settings need Redfish",
			"Machine %q declares %s, but IPMI has no standard way to change BIOS settings; use protocol = \"redfish\" (or \"auto\") if the BMC speaks it.", m.Name, attr))
	}
	return diags
}

// validateMachineNetwork settles which network a machine is on and checks
// its address against it.
func validateMachineNetwork(s *Site, m *Machine) hcl.Diagnostics {
	if m.Network != "" {
		n := s.Network(m.Network)
		if n == nil {
			return hcl.Diagnostics{errorAt(m.Range("network"), "Unknown network",
				"Machine %q refers to network %q, which is not declared. Declared networks: %s.", m.Name, m.Network, listNames(s.networkByName))}
		}
		return checkAddrInNetwork(m, n)
	}
	if m.IP.IsValid() {
		for _, n := range s.Networks {
			if n.Subnet.IsValid() && n.Subnet.Contains(m.IP) {
				m.Network = n.Name
				return checkAddrInNetwork(m, n)
			}
		}
		return hcl.Diagnostics{errorAt(m.Range("ip"), "IP address outside every network",
			"Machine %q has IP %s, which is in no declared network's subnet (%s).", m.Name, m.IP, subnetList(s.Networks))}
	}
	if m.IP6.IsValid() {
		// A machine of an IPv6-only network has no ip to place it by.
		for _, n := range s.Networks {
			if n.Subnet6.IsValid() && n.Subnet6.Contains(m.IP6) {
				m.Network = n.Name
				return checkAddrInNetwork(m, n)
			}
		}
	}
	switch len(s.Networks) {
	case 0:
		return hcl.Diagnostics{errorAt(m.DeclRange, "No network",
			"Machine %q needs a network to boot on; declare a network block.", m.Name)}
	case 1:
		m.Network = s.Networks[0].Name
		return nil
	}
	return hcl.Diagnostics{errorAt(m.DeclRange, "Network not given",
		"Machine %q has no ip and the site has several networks; set network = network.NAME or an ip.", m.Name)}
}

func checkAddrInNetwork(m *Machine, n *Network) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if m.IP6.IsValid() {
		switch {
		case !n.Subnet6.IsValid():
			diags = append(diags, errorAt(m.Range("ip6"), "IPv6 address on a network without subnet6",
				"Machine %q has ip6 %s, but its network %q declares no subnet6.", m.Name, m.IP6, n.Name))
		case !n.Subnet6.Contains(m.IP6):
			diags = append(diags, errorAt(m.Range("ip6"), "IPv6 address outside its network",
				"Machine %q has ip6 %s, outside the subnet6 %s of network %q.", m.Name, m.IP6, n.Subnet6, n.Name))
		case m.IP6 == n.Subnet6.Addr():
			diags = append(diags, errorAt(m.Range("ip6"), "Reserved IPv6 address",
				"Machine %q has ip6 %s, the subnet-router anycast address of %s; pick another.", m.Name, m.IP6, n.Subnet6))
		case m.IP6 == n.Gateway6:
			diags = append(diags, errorAt(m.Range("ip6"), "IPv6 address is the gateway",
				"Machine %q has ip6 %s, the gateway6 of network %q; pick another.", m.Name, m.IP6, n.Name))
		}
	}
	return append(diags, checkAddr4InNetwork(m, n)...)
}

func checkAddr4InNetwork(m *Machine, n *Network) hcl.Diagnostics {
	if m.IP.IsValid() && !n.Subnet.IsValid() && n.Subnet6.IsValid() {
		return hcl.Diagnostics{errorAt(m.Range("ip"), "IPv4 address on an IPv6-only network",
			"Machine %q has ip %s, but its network %q declares no subnet, only subnet6 %s; give it an ip6.", m.Name, m.IP, n.Name, n.Subnet6)}
	}
	if !m.IP.IsValid() || !n.Subnet.IsValid() {
		return nil
	}
	r := m.Range("ip")
	switch {
	case !n.Subnet.Contains(m.IP):
		return hcl.Diagnostics{errorAt(r, "IP address outside its network",
			"Machine %q has IP %s, outside the subnet %s of network %q.", m.Name, m.IP, n.Subnet, n.Name)}
	case m.IP == n.Subnet.Addr() || m.IP == broadcast(n.Subnet):
		return hcl.Diagnostics{errorAt(r, "Reserved IP address",
			"Machine %q: %s is the network or broadcast address of %s.", m.Name, m.IP, n.Subnet)}
	case m.IP == n.Gateway:
		return hcl.Diagnostics{errorAt(r, "IP address is the gateway",
			"Machine %q has IP %s, the gateway of network %q.", m.Name, m.IP, n.Name)}
	case n.InPool(m.IP):
		return hcl.Diagnostics{errorAt(r, "IP address inside the dynamic pool",
			"Machine %q has IP %s, inside the pool %s-%s of network %q, where metal hands addresses to unknown machines; pick an address outside the pool.",
			m.Name, m.IP, n.PoolStart, n.PoolEnd, n.Name)}
	}
	return nil
}

// validateBMC checks a bmc block of owner ("Machine \"web-01\"", "The
// fence").
func validateBMC(owner string, b *BMC) hcl.Diagnostics {
	var diags hcl.Diagnostics
	switch b.Protocol {
	case ProtocolRedfish, ProtocolIPMI, ProtocolAuto:
	default:
		diags = append(diags, errorAt(b.Range("protocol"), "Unknown BMC protocol",
			"%s: protocol must be \"redfish\", \"ipmi\" or \"auto\", got %q.", owner, b.Protocol))
	}
	if b.Address == "" {
		diags = append(diags, errorAt(b.Range("address"), "Missing BMC address", "%s: the bmc block needs an address.", owner))
	} else if msg := checkBMCAddress(b.Address); msg != "" {
		diags = append(diags, errorAt(b.Range("address"), "Invalid BMC address", "%s: %s", owner, msg))
	}
	if b.Username == "" || b.Password == "" {
		missing := "username"
		if b.Password == "" {
			missing = "password"
		}
		if b.Username == "" && b.Password == "" {
			missing = "username and password"
		}
		diags = append(diags, errorAt(b.DeclRange, "BMC without credentials",
			"%s: the bmc block has no %s. Declare a sensitive variable (variable \"bmc_password\" { sensitive = true }), use password = var.bmc_password, and set METAL_VAR_bmc_password.", owner, missing))
	}
	return diags
}

// checkBMCAddress accepts host, host:port, or an http(s) URL.
func checkBMCAddress(a string) string {
	if strings.Contains(a, "://") {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Sprintf("%q is not a BMC address; use HOST, HOST:PORT, or an http(s):// URL.", a)
		}
		return ""
	}
	if strings.ContainsAny(a, " /\t") {
		return fmt.Sprintf("%q is not a BMC address; use HOST, HOST:PORT, or an http(s):// URL.", a)
	}
	return ""
}

// validateSensitiveLabels refuses a sensitive value in a label that picks
// machines: the rack label (the console's racks) and the rollout's by
// label (its batches are named by it). Other labels may be sensitive.
func validateSensitiveLabels(s *Site) hcl.Diagnostics {
	var diags hcl.Diagnostics
	picking := []string{"rack"}
	if s.Rollout.By != "" && s.Rollout.By != "rack" {
		picking = append(picking, s.Rollout.By)
	}
	for _, m := range s.Machines {
		for _, k := range picking {
			if m.Sensitive["labels."+k] {
				diags = append(diags, errorAt(m.Range("labels"), "Sensitive value cannot be hidden",
					"Machine %q: label %q is computed from a sensitive variable, but metal cannot keep it secret: it picks machines "+
						"(racks in the console, the rollout's batches) and is shown wherever they are. Use a value that is not sensitive for it.", m.Name, k))
			}
		}
	}
	return diags
}

func validateRollout(s *Site) hcl.Diagnostics {
	r := s.Rollout
	if r.By == "" {
		return nil
	}
	for _, m := range s.Machines {
		if _, ok := m.Labels[r.By]; ok {
			return nil
		}
	}
	return hcl.Diagnostics{errorAt(r.DeclRange, "Rollout label unused",
		"rollout groups machines by label %q, but no machine has that label; add labels = { %s = \"...\" } to the machines.", r.By, r.By)}
}

func listNames[V any](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(sortedKeys(m), ", ")
}

func subnetList(nets []*Network) string {
	var parts []string
	for _, n := range nets {
		if n.Subnet.IsValid() {
			parts = append(parts, fmt.Sprintf("%s %s", n.Name, n.Subnet))
		}
	}
	if len(parts) == 0 {
		return "none declared"
	}
	return strings.Join(parts, ", ")
}
