package tftp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

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

// sendTo sends one datagram to peer.
func (s *transferSocket) sendTo(p []byte, peer netip.AddrPort) error {
	for {
		err := unix.Sendto(s.fd, p, 0, s.sockaddr(peer))
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// sendMsg sends p with control message oob to peer.
func (s *transferSocket) sendMsg(p, oob []byte, peer netip.AddrPort) error {
	for {
		_, err := unix.SendmsgN(s.fd, p, oob, s.sockaddr(peer), 0)
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
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
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
		switch sa := from.(type) {
		case *unix.SockaddrInet4:
			return n, netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), nil
		case *unix.SockaddrInet6:
			return n, netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)), nil
		}
	}
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
