package agent

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// Cmdline is what the agent learns from the kernel command line.
type Cmdline struct {
	// URL is metal's HTTP server: metal.url=http://HOST:PORT.
	URL string
	// BootIF is the MAC the firmware booted from (BOOTIF=01-aa-bb-...,
	// as pxelinux and iPXE write it); nil when absent.
	BootIF net.HardwareAddr
	// Token is metal.token=..., the machine's token, for networks where
	// metal cannot recognise it by its leased address.
	Token string
	// Addr and Gateway are a static address (metal.ip=ADDR/PREFIX) and
	// the router towards metal (metal.gw=ADDR), for a machine booted from
	// virtual media whose NIC has no DHCP server to ask: it takes no
	// lease. Zero: DHCP.
	Addr    netip.Prefix
	Gateway netip.Addr
}

// ParseCmdline reads the parameters the agent needs from /proc/cmdline's
// text. A missing metal.url is an error: the agent would not know whom to
// ask.
func ParseCmdline(s string) (Cmdline, error) {
	var c Cmdline
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "metal.url":
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return c, fmt.Errorf("kernel command line: metal.url=%q: want http://HOST:PORT", v)
			}
			c.URL = strings.TrimRight(v, "/")
		case "metal.token":
			c.Token = v
		case "BOOTIF":
			// "01-" is the ARP hardware type (Ethernet) before the MAC.
			mac := strings.ReplaceAll(strings.TrimPrefix(v, "01-"), "-", ":")
			hw, err := net.ParseMAC(mac)
			if err != nil || len(hw) != 6 {
				return c, fmt.Errorf("kernel command line: BOOTIF=%q: want 01-aa-bb-cc-dd-ee-ff", v)
			}
			c.BootIF = hw
		case "metal.ip":
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.Addr().Is4() {
				return c, fmt.Errorf("kernel command line: metal.ip=%q: want an IPv4 ADDR/PREFIX", v)
			}
			c.Addr = p
		case "metal.gw":
			a, err := netip.ParseAddr(v)
			if err != nil || !a.Is4() {
				return c, fmt.Errorf("kernel command line: metal.gw=%q: want an IPv4 address", v)
			}
			c.Gateway = a
		}
	}
	if c.URL == "" {
		return c, fmt.Errorf("kernel command line has no metal.url=http://HOST:PORT: the boot intent's cmdline must carry it")
	}
	if c.Gateway.IsValid() && !c.Addr.IsValid() {
		return c, fmt.Errorf("kernel command line: metal.gw= without metal.ip=ADDR/PREFIX")
	}
	if c.Gateway.IsValid() && !c.Addr.Masked().Contains(c.Gateway) {
		return c, fmt.Errorf("kernel command line: metal.gw=%s is not in metal.ip=%s's subnet", c.Gateway, c.Addr)
	}
	return c, nil
}
