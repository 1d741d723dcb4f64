package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// linkSender sends a reply to a client that has no address yet, as an
// IPv4/UDP datagram in an Ethernet frame addressed to its hardware
// address (RFC 2131 4.1, broadcast flag clear). It uses a packet socket
// rather than an ARP entry for yiaddr -> chaddr and the UDP socket (what
// dnsmasq does): an entry in the kernel's table would replace a real
// neighbour's for that address, needs removing once the datagram left,
// and two replies for the same address at once would race on it. The
// frame leaves with nothing left behind.
type linkSender struct {
	fd      int
	ifindex int
	src     netip.Addr
}

// maxUDPPayload is the most a datagram in one 1500-byte frame carries;
// a longer reply goes through the UDP socket, which fragments it.
const maxUDPPayload = 1500 - ipv4HeaderLen - udpHeaderLen

const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
)

// openLinkSender opens a send-only packet socket on iface (an Ethernet
// interface), in the calling thread's network namespace; src is the
// server's address, the datagrams' source.
func openLinkSender(iface string, src netip.Addr) (*linkSender, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", iface, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %s has no Ethernet address", iface)
	}
	if !src.Is4() {
		return nil, fmt.Errorf("source %v: want an IPv4 address", src)
	}
	// Protocol 0: the socket receives nothing, so it costs nothing under
	// a flood. SOCK_DGRAM: the kernel writes the Ethernet header, with
	// the interface's address as source.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	return &linkSender{fd: fd, ifindex: ifi.Index, src: src}, nil
}

// send sends payload from port 67 to dst in a frame to hw.
func (l *linkSender) send(hw net.HardwareAddr, dst netip.AddrPort, payload []byte) error {
	if len(hw) != 6 {
		return errors.New("not an Ethernet address")
	}
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: l.ifindex, Halen: 6}
	copy(to.Addr[:], hw)
	frame := ipv4UDP(netip.AddrPortFrom(l.src, serverPort), dst, payload)
	return unix.Sendto(l.fd, frame, 0, to)
}

func (l *linkSender) Close() error { return unix.Close(l.fd) }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ipv4UDP returns payload in a UDP datagram from src to dst, in an IPv4
// packet (no options, TTL 64), both checksums set.
func ipv4UDP(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, ipv4HeaderLen+udpHeaderLen+len(payload))
	ip, udp := b[:ipv4HeaderLen], b[ipv4HeaderLen:]
	ip[0] = 0x45 // version 4, 5 words of header
	binary.BigEndian.PutUint16(ip[2:], uint16(len(b)))
	ip[8] = 64 // TTL
	ip[9] = unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(0, ip))

	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[udpHeaderLen:], payload)
	// The pseudo-header: addresses, protocol, UDP length.
	var sum uint32
	for _, a := range [][4]byte{s, d} {
		sum += uint32(a[0])<<8 | uint32(a[1])
		sum += uint32(a[2])<<8 | uint32(a[3])
	}
	sum += unix.IPPROTO_UDP + uint32(len(udp))
	c := checksum(sum, udp)
	if c == 0 {
		c = 0xffff // 0 says "no checksum" (RFC 768)
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return b
}

// checksum is the Internet checksum (RFC 1071) of b, starting from sum.
func checksum(sum uint32, b []byte) uint16 {
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
