package http

import (
	"errors"
	"io"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendWhole writes hdr and then the first size bytes of f to tc, and
// returns how many of f's bytes went out. It is what the script
// connections send a kernel, an initrd or an image with, the largest part
// of a netboot's bytes. The header goes with MSG_MORE, so that it waits
// for the body and shares its first segment, as under TCP_CORK, but in
// one system call where cork, write and uncork took three; the body goes
// by sendfile(2), pushed at its end by TCP_NODELAY.
//
// sendfile goes through the runtime's system call hooks, as net's does,
// so that a call that runs long gives its P to the other goroutines. A
// raw call (holding the P) saved little CPU in a boot storm on two cores
// (1.38x the peers' against 1.41x), and the machines' DHCP and scripts
// then waited behind the files: p50 per machine 2.2x the peers' against
// 2.05x, the kernel step 2.0x against 1.6x, in alternating runs.
//
// When the socket's buffer is full the wait is the runtime's poller's
// (SyscallConn's Write), with the connection's deadline. Sent short of
// size is an error: io.ErrUnexpectedEOF if f ended early.
func sendWhole(tc *net.TCPConn, hdr []byte, f *os.File, size int64) (int64, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	src, err := fileFD(f)
	if err != nil {
		return 0, err
	}
	var off int64
	var werr error
	more := 0
	if size > 0 {
		more = unix.MSG_MORE
	}
	err = rc.Write(func(fd uintptr) bool {
		for len(hdr) > 0 {
			n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&hdr[0])), uintptr(len(hdr)),
				uintptr(unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL|more), 0, 0)
			switch e {
			case 0:
				hdr = hdr[n:]
				continue
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			werr = e
			return true
		}
		for off < size {
			n, e := unix.Sendfile(int(fd), src, &off, int(min(size-off, sendChunk)))
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
				return false
			case e != nil:
				werr = e
				return true
			case n == 0:
				werr = io.ErrUnexpectedEOF // the file is shorter than it was
				return true
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return off, &net.OpError{Op: "sendfile", Net: "tcp", Source: tc.LocalAddr(), Addr: tc.RemoteAddr(), Err: err}
	}
	return off, nil
}

// sendChunk bounds one sendfile call, as net's does (4 MiB): a kernel or
// an initrd in one.
const sendChunk = 4 << 20

// fileFD is f's descriptor, read without f.Fd, which would switch it to
// blocking mode (a no-op for a regular file, but not free).
func fileFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(d uintptr) { fd = int(d) }); err != nil {
		return -1, err
	}
	if fd < 0 {
		return -1, errors.New("no file descriptor")
	}
	return fd, nil
}
