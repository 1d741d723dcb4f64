package scaffold

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// HostAddrs are the IPv4 addresses of this host's interfaces, by name.
func HostAddrs() (map[string][]netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("interfaces: %w", err)
	}
	out := map[string][]netip.Prefix{}
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				ip, _ := netip.AddrFromSlice(ipn.IP.To4())
				ones, _ := ipn.Mask.Size()
				out[ifi.Name] = append(out[ifi.Name], netip.PrefixFrom(ip, ones))
			}
		}
	}
	return out, nil
}

// Locate completes o.Interface, o.Subnet and o.ServerIP, one of the first
// two given, from the host's addresses (HostAddrs): an interface's own
// address gives the subnet and metal's address on it, a subnet the
// interface that has an address in it.
func (o *Options) Locate(host map[string][]netip.Prefix) error {
	switch {
	case o.Interface != "" && !o.Subnet.IsValid():
		for _, h := range host[o.Interface] {
			o.Subnet, o.ServerIP = h.Masked(), h.Addr()
			break
		}
		if !o.Subnet.IsValid() {
			return fmt.Errorf("interface %q has no IPv4 address here: give the boot network with --subnet", o.Interface)
		}
	case o.Interface == "" && o.Subnet.IsValid():
		for name, ps := range host {
			for _, h := range ps {
				if o.Subnet.Contains(h.Addr()) {
					o.Interface, o.ServerIP = name, h.Addr()
				}
			}
		}
		if o.Interface == "" {
			return fmt.Errorf("no interface here has an address in %s: name it with --interface", o.Subnet)
		}
	case o.Interface != "" && o.Subnet.IsValid():
		for _, h := range host[o.Interface] {
			if o.Subnet.Contains(h.Addr()) {
				o.ServerIP = h.Addr()
			}
		}
	default:
		return errors.New("give the boot network: --interface NAME, --subnet CIDR, or both")
	}
	return nil
}

// ParsePool parses a pool given as START-END.
func ParsePool(s string) (start, end netip.Addr, err error) {
	a, b, ok := strings.Cut(s, "-")
	start, err1 := netip.ParseAddr(a)
	end, err2 := netip.ParseAddr(b)
	if !ok || err1 != nil || err2 != nil {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("--pool %q: want START-END, like 10.0.0.100-10.0.0.199", s)
	}
	return start, end, nil
}

// DefaultState is the state store of a new site: in /var/lib/metal when
// that exists (the Debian package makes it), else empty (Render's
// default, .metal beside the site file).
func DefaultState() string {
	if fi, err := os.Stat("/var/lib/metal"); err == nil && fi.IsDir() {
		return "file:///var/lib/metal/state.db"
	}
	return ""
}

// Inputs are the answers that arrive as text (metal init's flags), which
// Complete parses into Options.
type Inputs struct {
	Subnet, Gateway, ServerIP string
	DNS                       []string
	// Pool is START-END; BMCSubnet, where the BMCs live (default the
	// boot subnet), counts only with Scan.
	Pool, BMCSubnet string
	Scan            bool
}

// Complete parses in into o and fills in what the host's addresses (see
// Locate) and the defaults say: the gateway defaults to metal's own
// address, the state to DefaultState. Every error names what to fix.
func (o *Options) Complete(in Inputs, host map[string][]netip.Prefix) error {
	if in.Subnet != "" {
		p, err := netip.ParsePrefix(in.Subnet)
		if err != nil {
			return fmt.Errorf("--subnet %q: %v (write CIDR, like 10.0.0.0/24)", in.Subnet, err)
		}
		o.Subnet = p.Masked()
	}
	if err := o.Locate(host); err != nil {
		return err
	}
	for _, v := range []struct {
		flag, val string
		dst       *netip.Addr
	}{{"--server-ip", in.ServerIP, &o.ServerIP}, {"--gateway", in.Gateway, &o.Gateway}} {
		if v.val == "" {
			continue
		}
		ip, err := netip.ParseAddr(v.val)
		if err != nil {
			return fmt.Errorf("%s %q: %v", v.flag, v.val, err)
		}
		*v.dst = ip
	}
	if !o.Gateway.IsValid() && o.ServerIP.IsValid() {
		o.Gateway = o.ServerIP
	}
	for _, d := range in.DNS {
		ip, err := netip.ParseAddr(d)
		if err != nil {
			return fmt.Errorf("--dns %q: %v", d, err)
		}
		o.DNS = append(o.DNS, ip)
	}
	if in.Pool != "" {
		var err error
		if o.PoolStart, o.PoolEnd, err = ParsePool(in.Pool); err != nil {
			return err
		}
	}
	if o.State == "" {
		o.State = DefaultState()
	}
	o.BMCSubnet = o.Subnet
	if in.BMCSubnet != "" {
		p, err := netip.ParsePrefix(in.BMCSubnet)
		if err != nil {
			return fmt.Errorf("--bmc-subnet %q: %v", in.BMCSubnet, err)
		}
		o.BMCSubnet = p.Masked()
	}
	if !in.Scan {
		o.BMCSubnet = netip.Prefix{}
	}
	return nil
}
