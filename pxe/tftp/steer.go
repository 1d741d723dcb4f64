package tftp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// The listening port is shared by two sockets in one SO_REUSEPORT group:
// pin/tftp reads the first (it needs a *net.UDPConn of its own, so it can
// learn each request's local address and interface MTU, and a wrapper
// around it would cap every transfer at 512-byte blocks), and metal's own
// sender (window.go) reads the second. A classic BPF program attached to
// the group tells the kernel which socket a datagram goes to, so neither
// reader ever sees the other's requests. Every read request goes to
// metal's sender (readFilter), lockstep ones too: its blocking transfer
// socket answers a lockstep ACK sooner than pin/tftp's. Only when
// pin/tftp's sender anticipation is asked for do lockstep requests stay
// with pin/tftp, and then the program picks the requests that name
// windowsize (windowFilter).

// Indexes in the reuseport group, in the order the sockets were bound.
const (
	lockstepSocket = 0
	windowSocket   = 1
)

// steerScan is how many byte positions of a request the filter looks at
// for the windowsize option, at most: the kernel converts the program to
// eBPF (about 19 instructions a position) and refuses one larger than
// net.core.optmem_max bytes (128 KiB on Linux 6.7 and later, 20 KiB
// before), so listenWindowSocket shortens the scan by a quarter until
// the kernel takes it. A request whose option starts past the scan (after
// a long file name) goes to pin/tftp and is served lockstep.
const steerScan = 400

// windowFilter returns the program for a scan of n positions: the window
// socket for a read request that names the windowsize option (RFC 2347
// option names are case insensitive), the lockstep socket for anything
// else. The kernel runs it with the UDP payload at offset 0; a load past
// the end of the datagram ends the program with 0, the lockstep socket,
// so short packets need no length checks.
func windowFilter(n int) []unix.SockFilter {
	const (
		ldh  = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
		ldw  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		ldwx = unix.BPF_LD | unix.BPF_W | unix.BPF_IND
		ldbx = unix.BPF_LD | unix.BPF_B | unix.BPF_IND
		ldxk = unix.BPF_LDX | unix.BPF_W | unix.BPF_IMM
		or   = unix.BPF_ALU | unix.BPF_OR | unix.BPF_K
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ja   = unix.BPF_JMP | unix.BPF_JA
		retk = unix.BPF_RET | unix.BPF_K
		each = 5 // instructions per position
	)
	p := []unix.SockFilter{
		{Code: ldh, K: 0},
		{Code: jeq, K: 1, Jt: 1}, // RRQ: go on
		{Code: retk, K: lockstepSocket},
	}
	// Each position looks for "\0win" (OR-ing 0x20 into a letter folds
	// upper case to lower and maps no other byte onto a lower-case letter)
	// and on a match jumps, with the position in X, to one shared check of
	// the rest: a copy of that check per position would not fit.
	const first = 3 // after the opcode and a name of at least one byte
	tail := uint32(len(p) + each*n + 1)
	for i := uint32(first); i < first+uint32(n); i++ {
		p = append(p,
			unix.SockFilter{Code: ldw, K: i},
			unix.SockFilter{Code: or, K: 0x00202020},
			unix.SockFilter{Code: jeq, K: 0x0077696e, Jf: 2}, // "\0win"
			unix.SockFilter{Code: ldxk, K: i},
		)
		p = append(p, unix.SockFilter{Code: ja, K: tail - uint32(len(p)+1)})
	}
	return append(p,
		unix.SockFilter{Code: retk, K: lockstepSocket},
		// tail: X is the NUL before "win".
		unix.SockFilter{Code: ldwx, K: 4},
		unix.SockFilter{Code: or, K: 0x20202020},
		unix.SockFilter{Code: jeq, K: 0x646f7773, Jf: 4}, // "dows"
		unix.SockFilter{Code: ldwx, K: 8},
		unix.SockFilter{Code: or, K: 0x20202000},
		unix.SockFilter{Code: jeq, K: 0x697a6500, Jf: 1}, // "ize\0"
		unix.SockFilter{Code: retk, K: windowSocket},
		unix.SockFilter{Code: retk, K: lockstepSocket},
	)
}

// readFilter returns the program that sends every read request to the
// window socket and anything else (write requests, which pin/tftp
// refuses) to the lockstep socket.
func readFilter() []unix.SockFilter {
	return []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 0},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: opRRQ, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: windowSocket},
		{Code: unix.BPF_RET | unix.BPF_K, K: lockstepSocket},
	}
}

// setReusePort marks a socket as a member of a SO_REUSEPORT group. On a
// socket bound already (ServeConn's), Linux still lets a second socket
// join: the group is formed when that second one binds.
func setReusePort(c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	return errors.Join(err, serr)
}

// listenWindowSocket binds the window socket beside lockstep (same
// address and port) and attaches the steering program to their group.
// It also asks for each datagram's destination and interface
// (IP_PKTINFO, IPV6_RECVPKTINFO on an IPv6 socket), which the windowed
// sender needs for the reply's source and the MTU.
//
// Between the bind and the attach (microseconds, at start) the kernel
// spreads requests over both sockets by hash: a request without
// windowsize that lands on the window socket is served there with a
// window of 1, a write request there is dropped and its client asks
// again.
//
// With allReads, every read request goes to the window socket
// (readFilter); else only those naming windowsize do. It returns how
// many positions the kernel's program scans for windowsize (0 with
// allReads).
func listenWindowSocket(lockstep *net.UDPConn, allReads bool) (*net.UDPConn, int, error) {
	rc, err := lockstep.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	if err := setReusePort(rc); err != nil {
		return nil, 0, fmt.Errorf("reuseport on the listening socket: %w", err)
	}
	network, level, opt := "udp4", unix.IPPROTO_IP, unix.IP_PKTINFO
	if la, ok := lockstep.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		network, level, opt = "udp6", unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO
	}
	// The packet info before the bind: from then on, every datagram the
	// window socket receives says where it was sent.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), level, opt, 1)
		})
		return errors.Join(err, serr, setReusePort(c))
	}}
	pc, err := lc.ListenPacket(context.Background(), network, lockstep.LocalAddr().String())
	if err != nil {
		return nil, 0, fmt.Errorf("bind the window socket: %w", err)
	}
	conn := pc.(*net.UDPConn)
	wrc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	var serr error
	scan := 0
	err = wrc.Control(func(fd uintptr) {
		if allReads {
			prog := readFilter()
			serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
				&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
			return
		}
		for scan = steerScan; ; scan = scan * 3 / 4 {
			prog := windowFilter(scan)
			serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
				&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
			if !errors.Is(serr, unix.ENOMEM) || scan < 50 {
				break
			}
		}
	})
	if err = errors.Join(err, serr); err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("steering program: %w", err)
	}
	return conn, scan, nil
}

// threadNetns opens the network namespace of the calling thread. A
// goroutine that opens sockets for this server enters it first: the
// caller may have locked its thread into a namespace (a test lab), and
// goroutines it starts run on other threads.
func threadNetns() (*os.File, error) {
	return os.Open("/proc/thread-self/ns/net")
}

// enterNetns moves the calling goroutine into ns, unless its thread is
// there already (then nothing changes and no privilege is needed). A
// goroutine that entered stays locked to its thread, which the runtime
// ends when the goroutine exits, so no other goroutine inherits the
// namespace.
func enterNetns(ns *os.File) error {
	var want, have unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &want); err != nil {
		return fmt.Errorf("stat netns: %w", err)
	}
	runtime.LockOSThread()
	if err := unix.Stat("/proc/thread-self/ns/net", &have); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("stat own netns: %w", err)
	}
	if have.Dev == want.Dev && have.Ino == want.Ino {
		runtime.UnlockOSThread()
		return nil
	}
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns: %w", err)
	}
	return nil
}
