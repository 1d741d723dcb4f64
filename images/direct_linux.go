package images

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directAlign is what O_DIRECT needs buffers, lengths and file offsets
// aligned to: the disk's logical block size, 512 or 4096 on disks in use.
const directAlign = 4096

// directPieces is how many parts of each buffer are written at once with
// O_DIRECT. A direct write waits for the disk; two in flight keep it busy
// while one completes. A virtio disk takes a 4 MiB write as one request, so
// one write at a time would leave the disk idle between requests; a second
// one queued is all it needs.
const directPieces = 2

// flushEvery is how many bytes of direct writes pass between two flushes
// of the disk's write cache (fdatasync) that Write starts in the
// background. A direct write completes once the disk (or, under a VM, the
// host) holds the data in its volatile cache; the fsync after Write then
// waits for all of it to reach stable storage, after the last byte is
// hashed and written. Flushing as the image streams moves that wait into
// the time the pipeline spends reading and hashing, so the final fsync has
// little left; a flush blocks no write, and one at a time runs.
const flushEvery = 32 << 20

// diskWriter writes to dst, with O_DIRECT when dst is a file or block
// device that takes it. Direct writes skip the copy of every byte into the
// page cache (about as much CPU as the sha256 of the image) and go to the
// disk while the next buffers are read and hashed, so the fsync after Write
// has nothing left to wait for. Buffers whose length or address is not
// aligned, such as the last piece of an image, are written through the
// page cache.
type diskWriter struct {
	w io.Writer
	// While O_DIRECT is on: the file, its flags before, and the offset of
	// the next byte (direct writes are positioned, and restore moves the
	// file's offset there).
	f     *os.File
	flags int
	off   int64
	// The bytes written directly since the last flush began, the flush in
	// progress (it sends its error; nil when none runs) and how many
	// began.
	unflushed int64
	flushing  chan error
	flushes   int
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
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off%directAlign != 0 {
		return d
	}
	conn, err := f.SyscallConn()
	if err != nil {
		return d
	}
	conn.Control(func(fd uintptr) {
		flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil || flags&unix.O_APPEND != 0 {
			return
		}
		// File systems without direct I/O (tmpfs before Linux 6.6) refuse
		// the flag here; the write then goes through the page cache.
		if _, err := unix.FcntlInt(fd, unix.F_SETFL, flags|unix.O_DIRECT); err != nil {
			return
		}
		d.f, d.flags, d.off = f, flags, off
	})
	return d
}

func (d *diskWriter) Write(p []byte) (int, error) {
	if d.f == nil {
		return d.w.Write(p)
	}
	head := len(p) &^ (directAlign - 1)
	if uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign != 0 {
		head = 0
	}
	n := 0
	if head > 0 {
		m, err := d.writeDirect(p[:head])
		n += m
		if err != nil && !(m == 0 && errors.Is(err, unix.EINVAL)) {
			return n, err
		}
		if err := d.flush(m); err != nil {
			return n, err
		}
		// EINVAL with nothing written: this file or device does not take
		// direct writes of this size after all; the page cache does.
	}
	if n < len(p) {
		if err := d.restore(); err != nil {
			return n, err
		}
		m, err := d.w.Write(p[n:])
		return n + m, err
	}
	return n, nil
}

// writeDirect writes p at d.off, its pieces at the same time, and returns
// how many bytes from the start of p are written.
func (d *diskWriter) writeDirect(p []byte) (int, error) {
	piece := (len(p)/directPieces + directAlign - 1) &^ (directAlign - 1)
	var ns [directPieces]int
	var errs [directPieces]error
	var wg sync.WaitGroup
	for i := range directPieces {
		lo, hi := min(i*piece, len(p)), min((i+1)*piece, len(p))
		if lo < hi {
			wg.Go(func() { ns[i], errs[i] = d.f.WriteAt(p[lo:hi], d.off+int64(lo)) })
		}
	}
	wg.Wait()
	n := 0
	for i := range directPieces {
		n += ns[i]
		if errs[i] != nil {
			d.off += int64(n)
			return n, errs[i]
		}
	}
	d.off += int64(n)
	return n, nil
}

// flush counts n more bytes written directly and starts a flush in the
// background once flushEvery have passed since the last one began and none
// runs. It returns the error of a flush that ended with one: the disk
// failed to store what it was given.
func (d *diskWriter) flush(n int) error {
	d.unflushed += int64(n)
	if d.unflushed < flushEvery {
		return nil
	}
	if d.flushing != nil {
		select {
		case err := <-d.flushing:
			d.flushing = nil
			if err != nil {
				return fmt.Errorf("flush: %w", err)
			}
		default:
			return nil
		}
	}
	conn, err := d.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	d.unflushed = 0
	d.flushes++
	done := make(chan error, 1)
	d.flushing = done
	go func() {
		var err error
		if cerr := conn.Control(func(fd uintptr) { err = unix.Fdatasync(int(fd)) }); cerr != nil {
			err = cerr
		}
		done <- err
	}()
	return nil
}

// restore waits for the flush in progress, puts back the file's flags as
// they were before Write and its offset after the bytes written; from then
// on it writes through the page cache.
func (d *diskWriter) restore() error {
	f := d.f
	if f == nil {
		return nil
	}
	d.f = nil
	var flushErr error
	if d.flushing != nil {
		if err := <-d.flushing; err != nil {
			flushErr = fmt.Errorf("flush: %w", err)
		}
		d.flushing = nil
	}
	conn, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("direct i/o: %w", err)
	}
	var ferr error
	conn.Control(func(fd uintptr) {
		_, ferr = unix.FcntlInt(fd, unix.F_SETFL, d.flags)
	})
	if ferr != nil {
		return fmt.Errorf("direct i/o: restore flags: %w", ferr)
	}
	if _, err := f.Seek(d.off, io.SeekStart); err != nil {
		return fmt.Errorf("direct i/o: %w", err)
	}
	return flushErr
}

// hugePage is the size of a transparent huge page where metal runs
// (amd64 and arm64 with 4 KiB pages).
const hugePage = 2 << 20

// alignedBufs returns n buffers of size bytes, aligned for direct I/O, cut
// from one allocation that starts on a huge page and that the kernel is
// asked to back with transparent huge pages (MADV_HUGEPAGE: Debian's
// kernels use them only where asked). Every direct write pins its buffer's
// pages and every first read into a buffer faults them in: with 4 KiB pages
// that is 1,024 pins and faults per 4 MiB, with huge pages 2. On a 2-vCPU
// VM, where a fault is dear, a verified raw write of 512 MiB took 0.60
// CPU-seconds instead of 0.77 (sha256 alone: 0.51). The advice may be
// refused (no THP, another page size): the buffers work the same.
func alignedBufs(n, size int) [][]byte {
	b := make([]byte, n*size+hugePage)
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (hugePage - 1))
	b = b[off : off+n*size]
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = b[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs
}
