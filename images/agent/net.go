package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"golang.org/x/sys/unix"
)

// Link is the network the agent reached metal through.
type Link struct {
	Name    string
	MAC     net.HardwareAddr
	IP      net.IP
	Mask    net.IPMask
	Gateway net.IP
	// RenewAt is when the lease is half over: the agent asks DHCP again
	// then, so a machine waiting days for a task keeps its address.
	RenewAt time.Time
}

// candidates returns the NICs to try, in order: BOOTIF's if given and
// present, else every Ethernet NIC backed by a device.
func candidates(root string, bootIF net.HardwareAddr) []string {
	var names []string
	for _, n := range NICs(root) {
		if bootIF != nil && strings.EqualFold(n.MAC, bootIF.String()) {
			return []string{n.Name}
		}
		names = append(names, n.Name)
	}
	return names
}

// NetUp brings the NICs up and configures the first that gets a DHCP lease
// (insomniacslk/dhcp's nclient4 over a raw socket, since the NIC has no
// address yet; its nclient6 when metal's URL is on IPv6), or, when the command line gives a static address, the
// first with a link (BOOTIF's, when named) with that address and no DHCP
// at all. NICs appear some time after their driver loads, and a link takes
// a few seconds to negotiate, so it waits up to wait for them.
func NetUp(ctx context.Context, cmd Cmdline, wait time.Duration, log *slog.Logger) (Link, error) {
	bootIF := cmd.BootIF
	deadline := time.Now().Add(wait)
	var lastErr error
	for {
		names := candidates("/", bootIF)
		for _, name := range names {
			if err := linkUp(name); err != nil {
				lastErr = fmt.Errorf("%s: link up: %w", name, err)
				continue
			}
		}
		for _, name := range names {
			if readTrim(filepath.Join("/sys/class/net", name, "carrier")) != "1" {
				lastErr = fmt.Errorf("%s: no link", name)
				continue
			}
			if cmd.Addr.IsValid() {
				l, err := staticLink(name, cmd)
				if err == nil {
					err = configure(l)
				}
				if err != nil {
					return Link{}, fmt.Errorf("%s: %w", name, err)
				}
				return l, nil
			}
			lease := dhcpLease
			if metalOn6(cmd.URL) {
				lease = dhcp6Lease
			}
			l, err := lease(ctx, name)
			if err != nil {
				lastErr = fmt.Errorf("%s: %w", name, err)
				log.Warn("dhcp failed", "nic", name, "err", err)
				continue
			}
			if err := configure(l); err != nil {
				return Link{}, fmt.Errorf("%s: %w", name, err)
			}
			return l, nil
		}
		if len(names) == 0 {
			lastErr = fmt.Errorf("no network interface: is the NIC's driver in the agent's initramfs?")
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return Link{}, fmt.Errorf("network: %w", lastErr)
		}
		select {
		case <-ctx.Done():
			return Link{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func dhcpLease(ctx context.Context, name string) (Link, error) {
	c, err := nclient4.New(name, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return Link{}, fmt.Errorf("dhcp client: %w", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The vendor class says who asks, for metal's logs and for other
	// DHCP servers' rules.
	lease, err := c.Request(ctx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("metal-agent")))
	if err != nil {
		return Link{}, fmt.Errorf("dhcp: %w", err)
	}
	ack := lease.ACK
	l := Link{Name: name, MAC: c.InterfaceAddr(), IP: ack.YourIPAddr.To4(), Mask: ack.SubnetMask()}
	if l.Mask == nil {
		l.Mask = l.IP.DefaultMask()
	}
	if r := ack.Router(); len(r) > 0 {
		l.Gateway = r[0]
	}
	l.RenewAt = time.Now().Add(ack.IPAddressLeaseTime(time.Hour) / 2)
	return l, nil
}

// metalOn6 says whether metal's URL names an IPv6 host: the agent then
// asks DHCPv6 for its address, as the firmware and iPXE did before it on
// the same link.
func metalOn6(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(u.Hostname())
	return err == nil && a.Is6() && !a.Is4In6()
}

// dhcp6Lease asks DHCPv6 for the NIC's address (IA_NA, rapid commit when
// the server allows it). The address comes with no prefix length: the
// router advertisement's on-link prefix is how the kernel reaches metal
// (RFC 4861), so it is configured alone (/128).
func dhcp6Lease(ctx context.Context, name string) (Link, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The client binds the NIC's link-local address, which the kernel
	// forms, and checks for duplicates, a moment after the link is up.
	var c *nclient6.Client
	for {
		var err error
		c, err = nclient6.New(name, nclient6.WithTimeout(4*time.Second), nclient6.WithRetry(3))
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return Link{}, fmt.Errorf("dhcpv6 client: %w", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	defer c.Close()
	reply, err := c.RapidSolicit(ctx, dhcpv6.WithRequestedOptions(dhcpv6.OptionDNSRecursiveNameServer))
	if err != nil {
		return Link{}, fmt.Errorf("dhcpv6: %w", err)
	}
	ia := reply.Options.OneIANA()
	if ia == nil || ia.Options.OneAddress() == nil {
		return Link{}, fmt.Errorf("dhcpv6: the reply from %s holds no address", reply.Options.ServerID())
	}
	addr := ia.Options.OneAddress()
	renew := ia.T1
	if renew <= 0 {
		renew = addr.PreferredLifetime
	}
	if renew <= 0 {
		renew = 30 * time.Minute
	}
	return Link{Name: name, MAC: c.InterfaceAddr(), IP: addr.IPv6Addr, Mask: net.CIDRMask(128, 128),
		RenewAt: time.Now().Add(renew)}, nil
}

// staticLink is the command line's address on NIC name. It never expires:
// there is no lease to renew.
func staticLink(name string, cmd Cmdline) (Link, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return Link{}, err
	}
	l := Link{Name: name, MAC: ifi.HardwareAddr, IP: net.IP(cmd.Addr.Addr().AsSlice()),
		Mask:    net.CIDRMask(cmd.Addr.Bits(), 32),
		RenewAt: time.Now().AddDate(100, 0, 0)}
	if cmd.Gateway.IsValid() {
		l.Gateway = net.IP(cmd.Gateway.AsSlice())
	}
	return l, nil
}

func ioctlSocket() (int, error) {
	return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
}

func linkUp(name string) error { return setLink(name, true) }

func linkDown(name string) error { return setLink(name, false) }

func setLink(name string, up bool) error {
	fd, err := ioctlSocket()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	if up {
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	} else {
		ifr.SetUint16(ifr.Uint16() &^ unix.IFF_UP)
	}
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// configure gives the NIC its address and netmask, and the default route
// through the lease's router.
func configure(l Link) error {
	if l.IP.To4() == nil {
		return configure6(l)
	}
	fd, err := ioctlSocket()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, set := range []struct {
		req  uint
		addr net.IP
	}{{unix.SIOCSIFADDR, l.IP}, {unix.SIOCSIFNETMASK, net.IP(l.Mask)}} {
		ifr, err := unix.NewIfreq(l.Name)
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(set.addr.To4()); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, set.req, ifr); err != nil {
			return fmt.Errorf("set address %s/%s: %w", l.IP, net.IP(l.Mask), err)
		}
	}
	if l.Gateway == nil {
		return nil
	}
	ifi, err := net.InterfaceByName(l.Name)
	if err != nil {
		return err
	}
	if err := addDefaultRoute(ifi.Index, l.Gateway.To4()); err != nil {
		return fmt.Errorf("default route via %s: %w", l.Gateway, err)
	}
	return nil
}

// configure6 gives the NIC its IPv6 address, usable at once (no
// duplicate address detection: DHCPv6 reserved it for this machine).
func configure6(l Link) error {
	ifi, err := net.InterfaceByName(l.Name)
	if err != nil {
		return err
	}
	ones, _ := l.Mask.Size()
	ne := binary.NativeEndian
	body := make([]byte, unix.SizeofIfAddrmsg+20+8)
	body[0] = unix.AF_INET6
	body[1] = byte(ones)
	body[3] = unix.RT_SCOPE_UNIVERSE
	ne.PutUint32(body[4:], uint32(ifi.Index))
	attr := body[unix.SizeofIfAddrmsg:]
	ne.PutUint16(attr[0:], 20)
	ne.PutUint16(attr[2:], unix.IFA_LOCAL)
	copy(attr[4:20], l.IP.To16())
	ne.PutUint16(attr[20:], 8)
	ne.PutUint16(attr[22:], unix.IFA_FLAGS)
	ne.PutUint32(attr[24:], unix.IFA_F_NODAD)
	if err := netlinkDo(unix.RTM_NEWADDR, body); err != nil {
		return fmt.Errorf("set address %s/%d: %w", l.IP, ones, err)
	}
	return nil
}

// addDefaultRoute sends one RTM_NEWROUTE over rtnetlink: the standard
// library has no route API, and two messages do not warrant a netlink
// library.
func addDefaultRoute(ifindex int, gw net.IP) error {
	if gw == nil {
		return fmt.Errorf("not an IPv4 gateway")
	}
	ne := binary.NativeEndian
	rt := make([]byte, unix.SizeofRtMsg+8+8)
	rt[0] = unix.AF_INET
	rt[4] = unix.RT_TABLE_MAIN
	rt[5] = unix.RTPROT_BOOT
	rt[6] = unix.RT_SCOPE_UNIVERSE
	rt[7] = unix.RTN_UNICAST
	attr := rt[unix.SizeofRtMsg:]
	ne.PutUint16(attr[0:], 8)
	ne.PutUint16(attr[2:], unix.RTA_GATEWAY)
	copy(attr[4:8], gw)
	ne.PutUint16(attr[8:], 8)
	ne.PutUint16(attr[10:], unix.RTA_OIF)
	ne.PutUint32(attr[12:], uint32(ifindex))
	return netlinkDo(unix.RTM_NEWROUTE, rt)
}

// netlinkDo sends one rtnetlink request (create or replace) of type typ
// and waits for its acknowledgement.
func netlinkDo(typ uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	ne := binary.NativeEndian
	msg := make([]byte, unix.SizeofNlMsghdr+len(body))
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	ne.PutUint32(msg[8:], 1)
	copy(msg[unix.SizeofNlMsghdr:], body)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	if n < unix.SizeofNlMsghdr+4 || ne.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return fmt.Errorf("unexpected netlink answer")
	}
	if code := int32(ne.Uint32(buf[unix.SizeofNlMsghdr:])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// hostname sets the kernel's hostname, so the console shows which
// machine this is.
func setHostname(name string) {
	if name != "" {
		unix.Sethostname([]byte(name))
	}
}
