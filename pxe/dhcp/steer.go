package dhcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
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
// DISCOVER flood never reaches, and so do the DISCOVERs of the machines
// the policy declares, when it can list them (DeclaredLister). The
// readers then put known machines' packets first among what they read.
//
// A broadcast datagram is delivered to every socket bound to the port,
// each keeping it only if its filter (SO_ATTACH_FILTER) says so; a
// unicast one (relays, renewals) to one socket of the SO_REUSEPORT group,
// the one the group's program (SO_ATTACH_REUSEPORT_CBPF) picks. Both
// classify alike.

// steering returns a program that returns bulk for a DISCOVER (or
// anything it cannot tell), first for any other BOOTREQUEST whose first
// option is the message type (53), and first for a DISCOVER from one of
// declared (the declared machines' MACs: a declared machine booting
// during a flood is not queued behind it). at is where the BOOTP message
// starts in what the kernel gives the program: the UDP payload for a
// reuseport program, the UDP header for a socket filter. A packet with
// option 53 elsewhere counts as a DISCOVER, and is read as any other
// there. declared must be sorted (sortMACs); the program grows by about
// one instruction a MAC (see macSection).
func steering(at, bulk, first uint32, declared []net.HardwareAddr) []bpf.Instruction {
	p := []bpf.Instruction{
		bpf.LoadAbsolute{Off: at, Size: 1}, // op
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 1, SkipTrue: 6},
		bpf.LoadAbsolute{Off: at + 236, Size: 4}, // magic cookie
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x63825363, SkipTrue: 4},
		bpf.LoadAbsolute{Off: at + 240, Size: 2}, // first option: code, length
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 53<<8 | 1, SkipTrue: 2},
		bpf.LoadAbsolute{Off: at + 242, Size: 1}, // its value
		// A DISCOVER: its MAC decides (macSection).
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 1, SkipTrue: 2, SkipFalse: 1},
		bpf.RetConstant{Val: bulk},
		bpf.RetConstant{Val: first},
	}
	return append(p, macSection(at, bulk, first, declared)...)
}

// macChunk is at most how many MACs one chunk of macSection compares: a
// conditional jump reaches 255 instructions ahead at most.
const macChunk = 200

// macSection returns first if the chaddr of the message at at is one of
// macs, else bulk. MACs are compared in chunks that share their first
// four bytes (sorted MACs of one rack mostly do): the word is compared
// once a chunk, then each MAC's last two bytes, one instruction each.
func macSection(at, bulk, first uint32, macs []net.HardwareAddr) []bpf.Instruction {
	var p []bpf.Instruction
	for len(macs) > 0 {
		hi := binary.BigEndian.Uint32(macs[0])
		n := 1
		for n < len(macs) && n < macChunk && binary.BigEndian.Uint32(macs[n]) == hi {
			n++
		}
		p = append(p,
			bpf.LoadAbsolute{Off: at + 28, Size: 4}, // chaddr[0:4]
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: hi, SkipTrue: 1},
			// Not this chunk's: on to the next.
			bpf.Jump{Skip: uint32(n + 3)},
			bpf.LoadAbsolute{Off: at + 32, Size: 2}, // chaddr[4:6]
		)
		for i, mac := range macs[:n] {
			p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(binary.BigEndian.Uint16(mac[4:])), SkipTrue: uint8(n - i)})
		}
		p = append(p, bpf.Jump{Skip: 1}, bpf.RetConstant{Val: first})
		macs = macs[n:]
	}
	return append(p, bpf.RetConstant{Val: bulk})
}

// sortMACs returns the 6-byte MACs of macs, sorted, without duplicates.
func sortMACs(macs []net.HardwareAddr) []net.HardwareAddr {
	var out []net.HardwareAddr
	for _, m := range macs {
		if len(m) == 6 {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b net.HardwareAddr) int { return bytes.Compare(a, b) })
	return slices.CompactFunc(out, func(a, b net.HardwareAddr) bool { return bytes.Equal(a, b) })
}

const (
	udpHeader = 8
	keep      = 0xffff // a socket filter's "keep the whole datagram"
)

// The programs of a steered pair, for declared MACs (sorted): the group's
// picks the socket, 0 bulk, 1 first; the others are each socket's own
// filter.
func steerProgram(declared []net.HardwareAddr) []bpf.Instruction {
	return steering(0, 0, 1, declared)
}

func bulkFilter(declared []net.HardwareAddr) []bpf.Instruction {
	return steering(udpHeader, keep, 0, declared)
}

func firstFilter(declared []net.HardwareAddr) []bpf.Instruction {
	return steering(udpHeader, 0, keep, declared)
}

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
	err = attach(first, unix.SO_ATTACH_REUSEPORT_CBPF, steerProgram(nil))
	if err == nil {
		err = attach(first, unix.SO_ATTACH_FILTER, bulkFilter(nil))
	}
	if err == nil {
		err = attach(second, unix.SO_ATTACH_FILTER, firstFilter(nil))
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

// DeclaredLister is a pxe.BootPolicy that can also list its declared
// machines' MACs: the server then has the kernel steer their DISCOVERs to
// the socket a flood of unknown MACs never fills, as it does REQUESTs.
// changed is closed once the list is out of date (a machine added,
// removed, its MAC changed); a nil channel says it never is.
type DeclaredLister interface {
	DeclaredMACs() (macs []net.HardwareAddr, changed <-chan struct{})
}

// maxSteering is at most how many instructions a steering program may
// have (about a thousand MACs sharing their first four bytes, 170 that
// share none): beyond it the kernel's programs compare no MAC, and the
// readers alone put declared machines first. The kernel takes 4,096, but
// charges a socket filter to the socket's option memory
// (net.core.optmem_max, 20 KiB before Linux 6.7), which about 2,000 fill.
const maxSteering = 1024

// declare makes pair's programs steer the DISCOVERs of the sorted MACs
// declared to the second socket, where they steered those of was. No
// broadcast is lost meanwhile: a socket filter's DISCOVER from a MAC the
// bulk socket's filter drops is always one the first socket's keeps
// (the bulk filter drops was∩declared, then the first keeps declared,
// then the bulk drops declared), at worst one is read on both. On an
// error, the programs compare no MAC.
func declare(pair []net.PacketConn, was, declared []net.HardwareAddr) error {
	if n := len(steerProgram(declared)); n > maxSteering {
		return errors.Join(fmt.Errorf("%d declared MACs need %d BPF instructions, more than %d", len(declared), n, maxSteering),
			declare(pair, was, nil))
	}
	both := slices.DeleteFunc(slices.Clone(was), func(m net.HardwareAddr) bool {
		_, found := slices.BinarySearchFunc(declared, m, func(a, b net.HardwareAddr) int { return bytes.Compare(a, b) })
		return !found
	})
	err := attach(pair[0], unix.SO_ATTACH_FILTER, bulkFilter(both))
	if err == nil {
		err = attach(pair[1], unix.SO_ATTACH_FILTER, firstFilter(declared))
	}
	if err == nil {
		err = attach(pair[0], unix.SO_ATTACH_FILTER, bulkFilter(declared))
	}
	if err == nil {
		err = attach(pair[0], unix.SO_ATTACH_REUSEPORT_CBPF, steerProgram(declared))
	}
	if err != nil && len(declared) > 0 {
		err = errors.Join(err, declare(pair, was, nil))
	}
	return err
}
