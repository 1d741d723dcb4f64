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
	// wait is the receive timeout now set on the socket.
	wait time.Duration
}

// openTransferSocket opens a blocking UDP socket bound to local on a port
// of the kernel's choosing (the server's transfer ID), in the network
// namespace of the calling thread.
func openTransferSocket(local netip.Addr) (*transferSocket, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.As4()}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", local, err)
	}
	s := &transferSocket{fd: fd}
	if err := s.setWait(time.Second); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

func (s *transferSocket) close() error { return unix.Close(s.fd) }

func sockaddr(ap netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
}

// sendTo sends one datagram to peer.
func (s *transferSocket) sendTo(p []byte, peer netip.AddrPort) error {
	for {
		err := unix.Sendto(s.fd, p, 0, sockaddr(peer))
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// sendMsg sends p with control message oob to peer.
func (s *transferSocket) sendMsg(p, oob []byte, peer netip.AddrPort) error {
	for {
		_, err := unix.SendmsgN(s.fd, p, oob, sockaddr(peer), 0)
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
		sa, ok := from.(*unix.SockaddrInet4)
		if !ok {
			continue
		}
		return n, netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), nil
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
