package tftp

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// transferSocket is one transfer's UDP socket. The server's event loop
// (loop.go) waits for it with every other and reads it without waiting
// (MSG_DONTWAIT) when an ACK is there, or, for a lone transfer, waits in
// its receive, which the socket's receive timeout bounds. Sends never
// wait: one that finds the socket's buffer full is a datagram lost, as
// the network could lose it, and the transfer's timer sends it again.
//
// Its sends and receives are raw system calls, which the runtime does not
// see: none of them blocks, and the loop holding its P while ACKs come
// must not have the P taken away (sysmon hands off the P of a goroutine
// in a system call for more than 20 µs, which a segmented send of a
// large window may take) and wait for one back before the next block.
type transferSocket struct {
	fd int
	// zone is the interface index an IPv6 link-local peer is reached
	// through (its scope), 0 for any other address.
	zone uint32
	// to is the address last sent to, and sa and salen it as a socket
	// address: every block of a transfer goes to one peer, which is
	// converted once, not per send.
	to    netip.AddrPort
	sa    unix.RawSockaddrAny
	salen uint32
	// from receives the sender's address of each datagram.
	from unix.RawSockaddrAny
}

// openTransferSocket opens a UDP socket bound to local (IPv4 or IPv6) on a port of the kernel's choosing (the server's transfer ID), in
// the network namespace of the calling thread. ifindex is the interface
// the request came in on: the scope of an IPv6 link-local local address
// and of the peer's.
func openTransferSocket(local netip.Addr, ifindex int) (*transferSocket, error) {
	s := &transferSocket{}
	family := unix.AF_INET
	if local.Is6() {
		family = unix.AF_INET6
		if local.IsLinkLocalUnicast() {
			s.zone = uint32(ifindex)
		}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	s.fd = fd
	tv := unix.NsecToTimeval(heldWait.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("receive timeout: %w", err)
	}
	if err := unix.Bind(fd, s.sockaddr(netip.AddrPortFrom(local, 0))); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", local, err)
	}
	return s, nil
}

func (s *transferSocket) close() error { return unix.Close(s.fd) }

// sockaddr is ap in the socket's family; an IPv6 link-local address is
// scoped to the socket's interface.
func (s *transferSocket) sockaddr(ap netip.AddrPort) unix.Sockaddr {
	a := ap.Addr()
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4(), Port: int(ap.Port())}
	}
	sa := &unix.SockaddrInet6{Addr: a.As16(), Port: int(ap.Port())}
	if a.IsLinkLocalUnicast() {
		sa.ZoneId = s.zone
	}
	return sa
}

// setPeer makes peer the address s.sa holds, as the kernel takes it.
func (s *transferSocket) setPeer(peer netip.AddrPort) {
	if s.salen != 0 && peer == s.to {
		return
	}
	s.to = peer
	a := peer.Addr()
	if a.Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.sa))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: ntohs(peer.Port()), Addr: a.As4()}
		s.salen = unix.SizeofSockaddrInet4
		return
	}
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&s.sa))
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: ntohs(peer.Port()), Addr: a.As16()}
	if a.IsLinkLocalUnicast() {
		sa.Scope_id = s.zone
	}
	s.salen = unix.SizeofSockaddrInet6
}

// sendTo sends one datagram to peer.
func (s *transferSocket) sendTo(p []byte, peer netip.AddrPort) error {
	if len(p) == 0 {
		return errors.New("sendto: empty datagram")
	}
	s.setPeer(peer)
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_DONTWAIT,
			uintptr(unsafe.Pointer(&s.sa)), uintptr(s.salen))
		if e != unix.EINTR {
			return dropped(errnoErr(e))
		}
	}
}

// sendMsg sends p with control message oob to peer.
func (s *transferSocket) sendMsg(p, oob []byte, peer netip.AddrPort) error {
	if len(p) == 0 || len(oob) == 0 {
		return errors.New("sendmsg: empty datagram or control message")
	}
	s.setPeer(peer)
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&s.sa)), Namelen: s.salen, Iov: &iov, Control: &oob[0]}
	msg.SetIovlen(1)
	msg.SetControllen(len(oob))
	for {
		_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
		if e != unix.EINTR {
			return dropped(errnoErr(e))
		}
	}
}

// errnoErr is e as an error, nil for none.
func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// dropped makes a send that found the socket's buffer full a datagram
// lost: the transfer's timer sends it again.
func dropped(err error) error {
	if errors.Is(err, unix.EAGAIN) {
		return nil
	}
	return err
}

// recv receives one datagram into buf; wait says to wait for one, up
// to the socket's receive timeout. unix.EAGAIN when none came, unix.EINTR
// when a signal cut the wait short: not retried, as the signal may be
// the runtime's, asking the goroutine to stop (for a collection).
func (s *transferSocket) recv(buf []byte, wait bool) (int, netip.AddrPort, error) {
	flags := unix.MSG_DONTWAIT
	if wait {
		flags = 0
	}
	for {
		n, err := s.recvfrom(buf, flags)
		if err != nil {
			return 0, netip.AddrPort{}, err
		}
		// Without a zone: peers are compared by address and port, and
		// the socket's zone scopes a link-local one.
		switch s.from.Addr.Family {
		case unix.AF_INET:
			sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.from))
			return n, netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port)), nil
		case unix.AF_INET6:
			sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&s.from))
			return n, netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port)), nil
		}
	}
}

// recvfrom is recvfrom(2) into buf, the sender's address into s.from. It
// is not unix.Recvfrom (nor a system call the runtime sees): that one
// allocates the address it returns and, for every IPv4 datagram, asks
// the socket's protocol with a getsockopt(2) of its own, a second system
// call per block.
func (s *transferSocket) recvfrom(buf []byte, flags int) (int, error) {
	if len(buf) == 0 {
		return 0, errors.New("recvfrom: empty buffer")
	}
	alen := uint32(unix.SizeofSockaddrAny)
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(flags),
		uintptr(unsafe.Pointer(&s.from)), uintptr(unsafe.Pointer(&alen)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// ntohs reads a port as the kernel stores it, in network byte order, or
// writes one so (the swap is its own inverse).
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
