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
// socket. As with listen, a second server on the same interface fails: the
// port is first bound alone, without SO_REUSEPORT, and only then shared
// by our two sockets (the program never steers to a third).
func listenSteered(ctx context.Context, iface string, port int) ([]net.PacketConn, error) {
	var first net.PacketConn
	for deadline := time.Now().Add(bindRetryFor); ; {
		probe, err := listenRetrying(ctx, iface, port)
		if err != nil {
			return nil, err
		}
		probe.Close()
		// A closed socket stays bound while a child process forked at
		// that moment (any exec in this process) still shares it, until
		// the child execs: the probe can hold the port a moment longer.
		first, err = listen(ctx, iface, port, true)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
	second, err := listen(ctx, iface, port, true)
	if err != nil {
		first.Close()
		return nil, err
	}
	err = errors.Join(
		attach(first, unix.SO_ATTACH_REUSEPORT_CBPF, steerProgram),
		attach(first, unix.SO_ATTACH_FILTER, bulkFilter),
		attach(second, unix.SO_ATTACH_FILTER, firstFilter))
	if err != nil {
		second.Close()
		first.Close()
		// Some kernels or sandboxes refuse the program: one socket, as
		// before; the readers still put known machines first.
		c, lerr := listen(ctx, iface, port, false)
		if lerr != nil {
			return nil, errors.Join(err, lerr)
		}
		return []net.PacketConn{c}, nil
	}
	return []net.PacketConn{first, second}, nil
}

// attach sets a classic BPF program as c's socket option opt.
func attach(c net.PacketConn, opt int, program []bpf.Instruction) error {
	raw, err := bpf.Assemble(program)
	if err != nil {
		return fmt.Errorf("assemble BPF program: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(raw)), Filter: (*unix.SockFilter)(unsafe.Pointer(&raw[0]))}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, opt, &prog)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("attach BPF program (option %d): %w", opt, serr)
	}
	return nil
}

// bindRetryFor is how long listenRetrying keeps trying a port in use.
const bindRetryFor = 5 * time.Second

// listenRetrying is listen without SO_REUSEPORT, tried again for up to
// bindRetryFor while the port is in use: a socket closed a moment ago
// stays bound while a child process forked at that moment (any exec in
// this process, as tests and the lab do all the time) still shares it,
// until the child execs. A port held for longer is another server, and the
// error says so as before.
func listenRetrying(ctx context.Context, iface string, port int) (net.PacketConn, error) {
	deadline := time.Now().Add(bindRetryFor)
	for pause := 20 * time.Millisecond; ; pause = min(2*pause, 500*time.Millisecond) {
		c, err := listen(ctx, iface, port, false)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().Add(pause).After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(pause):
		}
	}
}
