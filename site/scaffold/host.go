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
