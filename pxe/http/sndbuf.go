package http

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A file body goes out with sendfile(2) on a non-blocking socket: each
// call queues as much as the socket's send buffer holds, and the handler's
// goroutine then parks until the kernel has sent some of it, wakes, and
// calls again. Autotuning starts a connection's buffer small (tcp_wmem's
// default, 16 KiB) and grows it with the congestion window, so a 4 MiB
// kernel took dozens of those rounds, each a park, a poller wake-up and a
// reschedule: most of what metal spent beyond nginx in a boot storm, and
// while metal's threads were busy (TFTP, DHCP), the transfer waited for
// one. A buffer that holds the whole file lets one call queue it; the
// kernel then sends it on ACKs alone, whatever the runtime is doing.
//
// A fixed SO_SNDBUF turns autotuning off for the socket, and the kernel
// caps it at net.core.wmem_max (doubled, for its bookkeeping). So the
// buffer is set only where that cap is no lower than autotuning's own
// ceiling (tcp_wmem's maximum): a connection never gets less than it
// could have grown to. On a stock kernel (wmem_max 208 KiB, tcp_wmem's
// maximum 4 MiB) nothing is set and autotuning stays as it was.
//
// Memory: the buffer bounds what a connection may queue; sendfile queues
// references to the page cache's pages, not copies, and the kernel's
// tcp_mem limits still apply to all sockets together.

// maxSendBuffer bounds what is asked for on a host whose wmem_max is
// huge: a few kernels and initrds' worth.
const maxSendBuffer = 16 << 20

// sendBufferFor is the SO_SNDBUF to ask for, given net.core.wmem_max and
// the maximum of net.ipv4.tcp_wmem; 0 leaves autotuning on.
func sendBufferFor(wmemMax, tcpWmemMax int) int {
	want := min(wmemMax, maxSendBuffer)
	// The kernel doubles what it is given (SO_SNDBUF in socket(7)).
	if want <= 0 || 2*want < tcpWmemMax {
		return 0
	}
	return want
}

// hostSendBuffer reads the two limits of the calling process's network
// namespace; 0 if either cannot be read.
func hostSendBuffer() int {
	wmemMax, err := readSysctlInts("/proc/sys/net/core/wmem_max")
	if err != nil || len(wmemMax) != 1 {
		return 0
	}
	tcpWmem, err := readSysctlInts("/proc/sys/net/ipv4/tcp_wmem")
	if err != nil || len(tcpWmem) != 3 {
		return 0
	}
	return sendBufferFor(wmemMax[0], tcpWmem[2])
}

func readSysctlInts(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var xs []int
	for _, f := range strings.Fields(string(b)) {
		x, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		xs = append(xs, x)
	}
	return xs, nil
}

// setSendBuffer sets SO_SNDBUF on a TCP listener, which every connection
// it accepts inherits: no system call per connection. Other listeners
// (a test's, a TLS wrapper) are left as they are.
func setSendBuffer(ln net.Listener, size int) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok || size <= 0 {
		return nil
	}
	return setsockoptInt(tl, unix.SOL_SOCKET, unix.SO_SNDBUF, size)
}

// setsockoptInt sets an integer socket option on c's socket.
func setsockoptInt(c syscall.Conn, level, opt, value int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), level, opt, value)
	}); err != nil {
		return err
	}
	return serr
}
