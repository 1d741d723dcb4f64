// Package ifaddr picks the address a server identifies itself with on an
// interface, from the kernel's own view of the interface's addresses:
// their flags (temporary, deprecated, tentative, secondary...) and age,
// which net.Interface.Addrs drops. Linux lists IPv6 addresses newest
// first, so "the first address in the subnet" changes whenever another
// one (a VIP, a privacy address) is added beside it.
package ifaddr

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Addr is one address of an interface, as rtnetlink reports it.
type Addr struct {
	Prefix netip.Prefix
	// Flags are the IFA_F_* flags (the 32-bit IFA_FLAGS when present).
	Flags uint32
	// Created is when the address was added, since boot (IFA_CACHEINFO's
	// cstamp, in hundredths of a second).
	Created time.Duration
}

// Addr is the address itself.
func (a Addr) Addr() netip.Addr { return a.Prefix.Addr() }

var flagNames = []struct {
	flag uint32
	name string
}{
	{unix.IFA_F_PERMANENT, "permanent"}, {unix.IFA_F_SECONDARY, "secondary"},
	{unix.IFA_F_TENTATIVE, "tentative"}, {unix.IFA_F_DEPRECATED, "deprecated"},
	{unix.IFA_F_DADFAILED, "dadfailed"}, {unix.IFA_F_NODAD, "nodad"},
	{unix.IFA_F_MANAGETEMPADDR, "mngtmpaddr"}, {unix.IFA_F_OPTIMISTIC, "optimistic"},
}

// FlagString names the address's flags as `ip addr` does ("dynamic" for
// an address that is not permanent, that is, has a lifetime).
func (a Addr) FlagString() string {
	var out []string
	if a.Flags&unix.IFA_F_TEMPORARY != 0 {
		out = append(out, "temporary")
	}
	for _, f := range flagNames {
		if a.Flags&f.flag != 0 {
			out = append(out, f.name)
		}
	}
	if a.Flags&unix.IFA_F_PERMANENT == 0 {
		out = append(out, "dynamic")
	}
	return strings.Join(out, " ")
}

// List returns the addresses of interface name in the calling thread's
// network namespace.
func List(name string) ([]Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", name, err)
	}
	rib, err := syscall.NetlinkRIB(syscall.RTM_GETADDR, syscall.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("interface %q: dump addresses: %w", name, err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return nil, fmt.Errorf("interface %q: parse addresses: %w", name, err)
	}
	var out []Addr
	for _, m := range msgs {
		if m.Header.Type != syscall.RTM_NEWADDR || len(m.Data) < syscall.SizeofIfAddrmsg {
			continue
		}
		hdr := m.Data[:syscall.SizeofIfAddrmsg]
		msg := syscall.IfAddrmsg{Family: hdr[0], Prefixlen: hdr[1], Flags: hdr[2], Scope: hdr[3],
			Index: binary.NativeEndian.Uint32(hdr[4:8])}
		if int(msg.Index) != ifi.Index {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			return nil, fmt.Errorf("interface %q: parse address: %w", name, err)
		}
		a := Addr{Flags: uint32(msg.Flags)}
		var local, address netip.Addr
		for _, at := range attrs {
			switch at.Attr.Type {
			case unix.IFA_LOCAL:
				local, _ = netip.AddrFromSlice(at.Value)
			case unix.IFA_ADDRESS:
				address, _ = netip.AddrFromSlice(at.Value)
			case unix.IFA_FLAGS:
				if len(at.Value) >= 4 {
					a.Flags = binary.NativeEndian.Uint32(at.Value)
				}
			case unix.IFA_CACHEINFO:
				if len(at.Value) >= 12 {
					a.Created = time.Duration(binary.NativeEndian.Uint32(at.Value[8:12])) * 10 * time.Millisecond
				}
			}
		}
		// IFA_LOCAL is the interface's own address on point-to-point
		// links, where IFA_ADDRESS is the peer's.
		ip := address
		if local.IsValid() {
			ip = local
		}
		if !ip.IsValid() {
			continue
		}
		a.Prefix = netip.PrefixFrom(ip.Unmap(), int(msg.Prefixlen))
		out = append(out, a)
	}
	return out, nil
}

// ErrNone is Choose's error when no usable address is in the subnet.
var ErrNone = errors.New("no usable address")

// rank orders addresses by how fit they are to be a server's: lower is
// better; -1 is never.
func rank(a Addr) int {
	switch f := a.Flags; {
	case f&(unix.IFA_F_DADFAILED|unix.IFA_F_TEMPORARY) != 0:
		// A duplicate, or a privacy address that changes and expires.
		return -1
	case f&(unix.IFA_F_TENTATIVE|unix.IFA_F_DEPRECATED|unix.IFA_F_SECONDARY) != 0:
		// Not yet (or no longer) usable as a source, or an alias of
		// the subnet's primary address.
		return 2
	case f&unix.IFA_F_PERMANENT == 0:
		// Autoconfigured (SLAAC) or from DHCP: it may change.
		return 1
	default:
		return 0
	}
}

// Choose returns the address of addrs in subnet that a server should
// identify itself with: pin when it is one of them (the address the site
// names); else the best ranked (a permanent address over an
// autoconfigured one, over a tentative, deprecated or secondary one;
// never a temporary or duplicate one), the oldest among equals, then
// the lowest. The choice depends on the addresses alone, never on the
// order the kernel lists them in.
func Choose(addrs []Addr, subnet netip.Prefix, pin netip.Addr) (Addr, error) {
	var cands []Addr
	for _, a := range addrs {
		if subnet.Contains(a.Addr()) && rank(a) >= 0 {
			cands = append(cands, a)
		}
	}
	for _, a := range cands {
		if a.Addr() == pin {
			return a, nil
		}
	}
	if len(cands) == 0 {
		return Addr{}, ErrNone
	}
	return slices.MinFunc(cands, func(a, b Addr) int {
		if c := rank(a) - rank(b); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Created, b.Created); c != 0 {
			return c
		}
		return a.Addr().Compare(b.Addr())
	}), nil
}
