package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/inventory"
)

// eraseChunk is how much one write of an overwrite covers; verifySamples
// how many regions, spread evenly over the disk, the read-back checks
// (beside the first and last MiB), verifySample the size of each.
const (
	eraseChunk    = 4 << 20
	verifySamples = 256
	verifySample  = 64 << 10
)

// ErrNotErased is a disk that still holds something other than zeros where
// the wipe wrote zeros: it lies about its writes, or something wrote
// after.
var ErrNotErased = errors.New("the disk still holds data after the wipe")

// EraseDisk erases the block device (or file) at path by method and
// verifies the result. progress, when set, is told of bytes erased.
func EraseDisk(ctx context.Context, path string, method inventory.WipeMethod, progress func(done, total uint64)) (inventory.EraseRecord, error) {
	if method == "" {
		method = inventory.WipeQuick
	}
	rec := inventory.EraseRecord{Disk: path, Method: method}
	if !method.Valid() {
		return rec, fmt.Errorf("unknown wipe method %q (want quick, zero or secure)", method)
	}
	start := time.Now()
	defer func() { rec.Duration = time.Since(start) }()

	f, direct, err := openDirect(path)
	if err != nil {
		return rec, err
	}
	defer f.Close()
	size, err := deviceSize(f)
	if err != nil {
		return rec, err
	}

	switch method {
	case inventory.WipeQuick:
		if err := wipeEnds(f, size); err != nil {
			return rec, err
		}
		rec.Bytes = min(size, 2*wipeBytes)
	case inventory.WipeSecure:
		if err := ioctlRange(f, unix.BLKSECDISCARD, size); err != nil {
			rec.Method = inventory.WipeZero
			rec.Note = fmt.Sprintf("the device cannot erase itself (BLKSECDISCARD: %v); overwritten with zeros instead", err)
			if err := overwrite(ctx, f, direct, size, progress); err != nil {
				return rec, err
			}
		} else {
			rec.Note = "erased by the device (BLKSECDISCARD)"
		}
		rec.Bytes = size
	case inventory.WipeZero:
		if err := overwrite(ctx, f, direct, size, progress); err != nil {
			return rec, err
		}
		rec.Bytes = size
	}
	if err := f.Sync(); err != nil {
		return rec, fmt.Errorf("sync: %w", err)
	}
	dropCache(f)
	n, err := verifyZero(f, size, method == inventory.WipeQuick)
	rec.VerifiedBytes = n
	if err != nil {
		return rec, err
	}
	rec.Verified = true
	rereadPartitions(f, nil)
	return rec, nil
}

// openDirect opens path for writing and reading around the page cache
// (O_DIRECT) where it can, so the read-back sees the disk, not the cache.
func openDirect(path string) (*os.File, bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
	if err == nil {
		return f, true, nil
	}
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	return f, false, err
}

// deviceSize is a block device's size in bytes, or a file's.
func deviceSize(f *os.File) (uint64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return uint64(fi.Size()), nil
	}
	var n uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); e != 0 {
		return 0, fmt.Errorf("size of %s: %w", f.Name(), e)
	}
	return n, nil
}

// ioctlRange runs a discard-style ioctl (BLKDISCARD, BLKSECDISCARD) over
// the whole device.
func ioctlRange(f *os.File, req uint, size uint64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return errors.New("not a block device")
	}
	r := [2]uint64{0, size}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(unsafe.Pointer(&r[0]))); e != 0 {
		return e
	}
	return nil
}

// alignedBuffer is n zero bytes aligned for O_DIRECT (page-aligned, from
// mmap).
func alignedBuffer(n int) ([]byte, func(), error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}

// overwrite writes zeros over the whole of f.
func overwrite(ctx context.Context, f *os.File, direct bool, size uint64, progress func(done, total uint64)) error {
	buf, free, err := alignedBuffer(eraseChunk)
	if err != nil {
		return err
	}
	defer free()
	for off := uint64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(uint64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], int64(off)); err != nil {
			// O_DIRECT needs sector-sized writes; a tail that is not one
			// is written through the cache.
			if !direct || n%512 == 0 {
				return fmt.Errorf("write at %d: %w", off, err)
			}
			g, gerr := os.OpenFile(f.Name(), os.O_WRONLY, 0)
			if gerr != nil {
				return gerr
			}
			_, err = g.WriteAt(buf[:n], int64(off))
			g.Close()
			if err != nil {
				return fmt.Errorf("write at %d: %w", off, err)
			}
		}
		off += n
		if progress != nil {
			progress(off, size)
		}
	}
	return nil
}

// dropCache asks the kernel to forget the device's cached pages, so that
// reads come from the device.
func dropCache(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	_, _, _ = unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKFLSBUF, 0)
}

// verifyZero reads back the first and last MiB and, unless endsOnly,
// verifySamples regions spread over the whole disk, and fails if any byte
// is not zero. It returns how many bytes it read.
func verifyZero(f *os.File, size uint64, endsOnly bool) (uint64, error) {
	type region struct{ off, n uint64 }
	regions := []region{{0, min(size, wipeBytes)}}
	if size > wipeBytes {
		regions = append(regions, region{size - min(size, wipeBytes), min(size, wipeBytes)})
	}
	if !endsOnly && size > 2*wipeBytes {
		step := size / verifySamples
		for i := uint64(0); i < verifySamples; i++ {
			off := (i*step + step/2) &^ 4095
			regions = append(regions, region{off, min(verifySample, size-off)})
		}
	}
	buf, free, err := alignedBuffer(wipeBytes)
	if err != nil {
		return 0, err
	}
	defer free()
	var read uint64
	for _, r := range regions {
		n, err := f.ReadAt(buf[:r.n], int64(r.off))
		if err != nil && !errors.Is(err, io.EOF) {
			return read, fmt.Errorf("read back at %d: %w", r.off, err)
		}
		read += uint64(n)
		if i := nonZero(buf[:n]); i >= 0 {
			return read, fmt.Errorf("%w: byte %d is not zero", ErrNotErased, r.off+uint64(i))
		}
	}
	return read, nil
}

// nonZero is the index of the first byte of b that is not zero, or -1.
func nonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}
