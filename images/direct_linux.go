package images

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directAlign is what O_DIRECT needs buffers, lengths and file offsets
// aligned to: the disk's logical block size, 512 or 4096 on disks in use.
const directAlign = 4096

// diskWriter writes to dst, with O_DIRECT when dst is a file or block
// device that takes it. Direct writes skip the copy of every byte into the
// page cache (about as much CPU as the sha256 of the image) and go to the
// disk while the next buffers are read and hashed, so the fsync after Write
// has nothing left to wait for. Buffers whose length or address is not
// aligned, such as the last piece of an image, are written through the
// page cache.
type diskWriter struct {
	w      io.Writer
	conn   syscall.RawConn // set while O_DIRECT is on
	flags  int             // the file's status flags before, to restore
	direct bool
}

func newDiskWriter(w io.Writer) *diskWriter {
	d := &diskWriter{w: w}
	f, ok := w.(*os.File)
	if !ok {
		return d
	}
	fi, err := f.Stat()
	if err != nil {
		return d
	}
	mode := fi.Mode()
	blockDev := mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0
	if !mode.IsRegular() && !blockDev {
		return d
	}
	// Direct writes land at the file's offset, which must be aligned too.
	if off, err := f.Seek(0, io.SeekCurrent); err != nil || off%directAlign != 0 {
		return d
	}
	conn, err := f.SyscallConn()
	if err != nil {
		return d
	}
	conn.Control(func(fd uintptr) {
		flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			return
		}
		// File systems without direct I/O (tmpfs before Linux 6.6) refuse
		// the flag here; the write then goes through the page cache.
		if _, err := unix.FcntlInt(fd, unix.F_SETFL, flags|unix.O_DIRECT); err != nil {
			return
		}
		d.conn, d.flags, d.direct = conn, flags, true
	})
	return d
}

func (d *diskWriter) Write(p []byte) (int, error) {
	if !d.direct {
		return d.w.Write(p)
	}
	head := len(p) &^ (directAlign - 1)
	if uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign != 0 {
		head = 0
	}
	n := 0
	if head > 0 {
		m, err := d.w.Write(p[:head])
		n += m
		if err != nil && !(m == 0 && errors.Is(err, unix.EINVAL)) {
			return n, err
		}
		// EINVAL with nothing written: this file or device does not take
		// direct writes of this size after all; the page cache does.
	}
	if n < len(p) {
		d.restore()
		m, err := d.w.Write(p[n:])
		return n + m, err
	}
	return n, nil
}

// restore puts back the file's flags as they were before Write; from then
// on it writes through the page cache.
func (d *diskWriter) restore() {
	if !d.direct {
		return
	}
	d.direct = false
	d.conn.Control(func(fd uintptr) {
		unix.FcntlInt(fd, unix.F_SETFL, d.flags)
	})
}

// alignedBuf returns size bytes starting at a multiple of directAlign.
func alignedBuf(size int) []byte {
	b := make([]byte, size+directAlign)
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (directAlign - 1))
	return b[off : off+size : off+size]
}
