package tftp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// transferSocket is one transfer's UDP socket, in blocking mode: its
// goroutine sends a block and then sleeps in the kernel until the ACK
// comes or the receive timeout runs out. A lockstep block then costs one
// send and one receive; through the runtime's poller it would cost a
// failed read, a park of the goroutine, an epoll wake-up, a second read
// and a timer reset. The price is an OS thread per transfer in flight,
// which the runtime creates as needed.
//
// The receive timeout (SO_RCVTIMEO) is always set: a receive never
// blocks for longer, so a transfer ends on its own even when nothing is
// left to close its socket.
type transferSocket struct {
	fd int
	// zone is the interface index an IPv6 link-local peer is reached
	// through (its scope), 0 for any other address.
	zone uint32
	// wait is the receive timeout now set on the socket.
	wait time.Duration
	// to is the address last sent to, and sa it as a socket address:
	// every block of a transfer goes to one peer, which is converted
	// once, not per send.
	to netip.AddrPort
	sa unix.Sockaddr
	// from receives the sender's address of each datagram.
	from unix.RawSockaddrAny
}

// openTransferSocket opens a blocking UDP socket bound to local (IPv4 or
// IPv6) on a port of the kernel's choosing (the server's transfer ID), in
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
	if err := unix.Bind(fd, s.sockaddr(netip.AddrPortFrom(local, 0))); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", local, err)
	}
	if err := s.setWait(time.Second); err != nil {
		unix.Close(fd)
		return nil, err
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

// peerSockaddr is peer as a socket address, converted once per peer.
func (s *transferSocket) peerSockaddr(peer netip.AddrPort) unix.Sockaddr {
	if s.sa == nil || peer != s.to {
		s.to, s.sa = peer, s.sockaddr(peer)
	}
	return s.sa
}

// sendTo sends one datagram to peer.
func (s *transferSocket) sendTo(p []byte, peer netip.AddrPort) error {
	for {
		err := unix.Sendto(s.fd, p, 0, s.peerSockaddr(peer))
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// sendMsg sends p with control message oob to peer.
func (s *transferSocket) sendMsg(p, oob []byte, peer netip.AddrPort) error {
	for {
		_, err := unix.SendmsgN(s.fd, p, oob, s.peerSockaddr(peer), 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// recvFrom receives one datagram into buf, waiting until deadline at
// most; past it, the error is os.ErrDeadlineExceeded.
func (s *transferSocket) recvFrom(buf []byte, deadline time.Time) (int, netip.AddrPort, error) {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, netip.AddrPort{}, os.ErrDeadlineExceeded
		}
		// The timeout is set again only when it would overshoot the
		// deadline by more than a little, or undershoot it by much: in a
		// transfer's common case every wait is the same and costs no
		// system call of its own.
		if s.wait > left+time.Millisecond || s.wait < left/2 {
			if err := s.setWait(left); err != nil {
				return 0, netip.AddrPort{}, err
			}
		}
		n, err := s.recv(buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			continue // the timeout ran out: the loop checks the deadline
		case err != nil:
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

// recv is recvfrom(2) into buf, the sender's address into s.from. It
// is not unix.Recvfrom: that one allocates the address it returns and,
// for every IPv4 datagram, asks the socket's protocol with a
// getsockopt(2) of its own, a second system call per block.
func (s *transferSocket) recv(buf []byte) (int, error) {
	if len(buf) == 0 {
		return 0, errors.New("recv: empty buffer")
	}
	alen := uint32(unix.SizeofSockaddrAny)
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0,
		uintptr(unsafe.Pointer(&s.from)), uintptr(unsafe.Pointer(&alen)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// ntohs reads a port as the kernel stores it, in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func (s *transferSocket) setWait(d time.Duration) error {
	// A zero timeval would mean no timeout at all.
	tv := unix.NsecToTimeval(max(d, time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("receive timeout: %w", err)
	}
	s.wait = d
	return nil
}
