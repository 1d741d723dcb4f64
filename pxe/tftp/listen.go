package tftp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// requestSocket is the window socket as the transfers' event loop
// (loop.go) reads it: the loop waits for it in the same epoll_wait(2)
// as for its transfers' ACKs and starts a transfer for each request that
// came. A thread of its own sleeping in poll(2) for requests (as before)
// was, in a rack's boot storm, the largest cause of the runtime taking a
// P back from a system call (about 170 of 450 per storm), each of which
// keeps the runtime's monitor (sysmon) waking every 20 µs for a
// millisecond; waiting through the runtime's poller instead, a request
// waited for the next network poll, about every 10 ms in a busy process.
//
// The loop owns the socket: it closes it when told to stop, so the
// descriptor it reads is never one the socket no longer owns.
type requestSocket struct {
	conn *net.UDPConn
	fd   int
	log  *slog.Logger
	// start starts a transfer for a request: the datagram, its control
	// messages and its sender. It does not keep pkt or oob.
	start    func(pkt, oob []byte, from netip.AddrPort)
	buf, oob []byte
}

// requestBatch bounds the requests read at one readiness of the socket:
// the loop goes back to its transfers' ACKs in between, and the kernel
// keeps the rest for the next wait.
const requestBatch = 32

func newRequestSocket(conn *net.UDPConn, log *slog.Logger, start func(pkt, oob []byte, from netip.AddrPort)) (*requestSocket, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("window socket: %w", err)
	}
	r := &requestSocket{conn: conn, fd: -1, log: log, start: start, buf: make([]byte, 65536), oob: make([]byte, 128)}
	if err := rc.Control(func(fd uintptr) { r.fd = int(fd) }); err != nil {
		return nil, fmt.Errorf("window socket: %w", err)
	}
	return r, nil
}

// readAll starts a transfer for each request waiting, requestBatch at
// most.
func (r *requestSocket) readAll() {
	for range requestBatch {
		n, oobn, _, sa, err := unix.Recvmsg(r.fd, r.buf, r.oob, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			return
		case err != nil:
			r.log.Debug("tftp read", "err", err)
			return
		}
		var from netip.AddrPort
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			from = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		case *unix.SockaddrInet6:
			from = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
		default:
			continue // not an IP datagram: not for us
		}
		r.start(r.buf[:n], r.oob[:oobn], from)
	}
}

func (r *requestSocket) close() { r.conn.Close() }
