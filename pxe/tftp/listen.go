package tftp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// requestReader reads read requests from the window socket on a thread
// that sleeps in poll(2) until one comes, as the transfers' event loop
// sleeps in epoll_wait(2) (loop.go). Through the runtime's
// poller a request would wait until some thread next polls the network,
// which a process busy on both CPUs (a rack booting: HTTP sending kernels
// beside TFTP) does only every 10 ms or so; a rack's requests queued up
// behind that wait.
type requestReader struct {
	rc   syscall.RawConn
	fd   int // the window socket, for poll(2) only: reads go through rc
	wake *wakeup
}

func newRequestReader(conn *net.UDPConn, wake *wakeup) (*requestReader, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("window socket: %w", err)
	}
	r := &requestReader{rc: rc, fd: -1, wake: wake}
	if err := rc.Control(func(fd uintptr) { r.fd = int(fd) }); err != nil {
		return nil, fmt.Errorf("window socket: %w", err)
	}
	return r, nil
}

// read returns the next datagram, its control messages and its sender;
// net.ErrClosed once the socket is closed (wake poked). It reads through
// rc, which refuses a closed socket, so a descriptor number the socket
// no longer owns is polled at most, never read.
func (r *requestReader) read(buf, oob []byte) (n, oobn int, from netip.AddrPort, err error) {
	for {
		var sa unix.Sockaddr
		var rerr error
		cerr := r.rc.Control(func(fd uintptr) {
			n, oobn, _, sa, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
		})
		switch {
		case cerr != nil:
			return 0, 0, from, net.ErrClosed
		case rerr == nil:
			switch sa := sa.(type) {
			case *unix.SockaddrInet4:
				return n, oobn, netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), nil
			case *unix.SockaddrInet6:
				return n, oobn, netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)), nil
			}
			continue // not an IP datagram: not for us
		case !errors.Is(rerr, unix.EAGAIN) && !errors.Is(rerr, unix.EINTR):
			return 0, 0, from, rerr
		}
		fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}, {Fd: int32(r.wake.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return 0, 0, from, fmt.Errorf("poll: %w", err)
		}
		if fds[1].Revents != 0 {
			return 0, 0, from, net.ErrClosed
		}
	}
}

// wakeup is an eventfd that ends a requestReader's poll: the socket's
// closing does not (poll holds on to the socket).
type wakeup struct{ fd int }

func newWakeup() (*wakeup, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &wakeup{fd: fd}, nil
}

// poke makes the eventfd readable, for good.
func (w *wakeup) poke() {
	one := [8]byte{1}
	_, _ = unix.Write(w.fd, one[:])
}

// close closes the eventfd, once no reader polls it.
func (w *wakeup) close() { unix.Close(w.fd) }
