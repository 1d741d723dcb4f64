package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// A flood fills a socket's receive queue, and the kernel then drops or
// delays every packet alike: a reader, however it orders what it reads,
// sees a machine's REQUEST only after the thousands of DISCOVERs queued
// before it, or never. So port 67 has two sockets, and classic BPF
// programs the kernel runs on each datagram before queueing it keep them
// apart: DISCOVERs (what floods are made of) go to the first, everything
// else (REQUEST, DECLINE, RELEASE, INFORM) to the second, whose queue a
// DISCOVER flood never reaches. The readers then put known machines'
// packets first among what they read.
//
// A broadcast datagram is delivered to every socket bound to the port,
// each keeping it only if its filter (SO_ATTACH_FILTER) says so; a
// unicast one (relays, renewals) to one socket of the SO_REUSEPORT group,
// the one the group's program (SO_ATTACH_REUSEPORT_CBPF) picks. Both
// classify alike.

// steering returns a program that returns bulk for a DISCOVER (or
// anything it cannot tell), first for any other BOOTREQUEST whose first
// option is the message type (53). at is where the BOOTP message starts
// in what the kernel gives the program: the UDP payload for a reuseport
// program, the UDP header for a socket filter. A packet with option 53
// elsewhere counts as a DISCOVER, and is read as any other there.
func steering(at, bulk, first uint32) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: at, Size: 1}, // op
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 1, SkipTrue: 6},
		bpf.LoadAbsolute{Off: at + 236, Size: 4}, // magic cookie
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x63825363, SkipTrue: 4},
		bpf.LoadAbsolute{Off: at + 240, Size: 2}, // first option: code, length
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 53<<8 | 1, SkipTrue: 2},
		bpf.LoadAbsolute{Off: at + 242, Size: 1}, // its value
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 1, SkipTrue: 1},
		bpf.RetConstant{Val: bulk},
		bpf.RetConstant{Val: first},
	}
}

const (
	udpHeader = 8
	keep      = 0xffff // a socket filter's "keep the whole datagram"
)

var (
	// steerProgram picks the socket of the group: 0 bulk, 1 first.
	steerProgram = steering(0, 0, 1)
	// bulkFilter and firstFilter are the sockets' own filters.
	bulkFilter  = steering(udpHeader, keep, 0)
	firstFilter = steering(udpHeader, 0, keep)
)

// listenSteered opens port on iface as two sockets steered by
// steerProgram: DISCOVERs to the first, the rest to the second. Where the
// kernel refuses (no SO_REUSEPORT or BPF steering) it returns one plain
// socket. As with listen, a second server on the same interface fails:
// the first socket binds the port alone, without SO_REUSEPORT, and only
// once bound joins the group the second one then makes with it (Linux
// forms a reuseport group when a second socket binds beside one that has
// SO_REUSEPORT set, however late it was set). No socket of ours is closed
// and bound again on the way: a closed socket stays bound while any child
// process forked meanwhile keeps its copy, until that child's exec ends,
// and this process forks at any moment (tests, the lab, hooks).
func listenSteered(ctx context.Context, iface string, port int) ([]net.PacketConn, error) {
	first, err := listenRetrying(ctx, iface, port)
	if err != nil {
		return nil, err
	}
	return steer(ctx, first, iface, port)
}

// steer makes first, bound alone to port on iface, the bulk socket of a
// steered pair; on failure it returns first alone, unfiltered.
func steer(ctx context.Context, first net.PacketConn, iface string, port int) ([]net.PacketConn, error) {
	if err := control(first, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return []net.PacketConn{first}, nil
	}
	second, err := listen(ctx, iface, port, true)
	if err != nil {
		return []net.PacketConn{first}, nil
	}
	err = attach(first, unix.SO_ATTACH_REUSEPORT_CBPF, steerProgram)
	if err == nil {
		err = attach(first, unix.SO_ATTACH_FILTER, bulkFilter)
	}
	if err == nil {
		err = attach(second, unix.SO_ATTACH_FILTER, firstFilter)
	}
	if err != nil {
		// Some kernels or sandboxes refuse the programs: one socket, as
		// before; the readers still put known machines first. Alone in
		// its group, a reuseport program's choice of the second socket
		// falls back to the first.
		second.Close()
		if derr := control(first, func(fd int) error {
			err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
			if errors.Is(err, unix.ENOENT) { // none was attached
				return nil
			}
			return err
		}); derr != nil {
			first.Close()
			return nil, fmt.Errorf("dhcp: steering on %s port %d: %w", iface, port, errors.Join(err, derr))
		}
		return []net.PacketConn{first}, nil
	}
	return []net.PacketConn{first, second}, nil
}

// control runs f on c's file descriptor.
func control(c net.PacketConn, f func(fd int) error) error {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// attach sets a classic BPF program as c's socket option opt.
func attach(c net.PacketConn, opt int, program []bpf.Instruction) error {
	raw, err := bpf.Assemble(program)
	if err != nil {
		return fmt.Errorf("assemble BPF program: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(raw)), Filter: (*unix.SockFilter)(unsafe.Pointer(&raw[0]))}
	if err := control(c, func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, opt, &prog)
	}); err != nil {
		return fmt.Errorf("attach BPF program (option %d): %w", opt, err)
	}
	return nil
}

// bindRetryFor is how long listenRetrying keeps trying a port in use.
const bindRetryFor = 5 * time.Second

// listenRetrying is listen without SO_REUSEPORT, tried again for up to
// bindRetryFor while the port is in use. A server that has just stopped
// (a restart, in this process or another) may still hold it a moment: a
// closed socket stays bound while a child process forked before the close
// still has its copy, until that child's exec ends. A port held for longer
// is another server's, and the error says so.
func listenRetrying(ctx context.Context, iface string, port int) (net.PacketConn, error) {
	deadline := time.Now().Add(bindRetryFor)
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 500*time.Millisecond) {
		c, err := listen(ctx, iface, port, false)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			return c, err
		}
		if time.Now().Add(pause).After(deadline) {
			return nil, fmt.Errorf("%w (held for %s: is another DHCP server running on %s?)", err, bindRetryFor, iface)
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(pause):
		}
	}
}
