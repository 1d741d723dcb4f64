package agent

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/pxe/agentapi"
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
//
// The verification reads back the first and last MiB and verifySamples
// regions spread over the disk. After an overwrite every byte read must
// be zero. After the device erased itself (discard, a secure erase) the
// device may return zeros or anything else (a crypto erase returns
// noise), so every sampled sector must be zero or differ from what it
// held before the erase: old data read back fails it.
func EraseDisk(ctx context.Context, path string, method agentapi.WipeMethod, progress func(done, total uint64)) (rec agentapi.EraseRecord, err error) {
	if method == "" {
		method = agentapi.WipeQuick
	}
	rec = agentapi.EraseRecord{Disk: path, Method: method}
	if !method.Valid() {
		return rec, fmt.Errorf("unknown wipe method %q (want quick, discard, zero or secure)", method)
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
	regions := sampleRegions(size, method == agentapi.WipeQuick)
	overwriteAll := func(why string) error {
		rec.Method, rec.Mechanism = agentapi.WipeZero, "overwrite"
		if why != "" {
			rec.Note = why + "; overwritten with zeros instead"
		}
		rec.Bytes = size
		if err := overwrite(ctx, f, direct, size, progress); err != nil {
			return err
		}
		return f.Sync()
	}

	switch method {
	case agentapi.WipeQuick:
		if err := wipeEnds(f, size); err != nil {
			return rec, err
		}
		rec.Mechanism, rec.Bytes = "ends", min(size, 2*wipeBytes)
	case agentapi.WipeZero:
		if err := overwriteAll(""); err != nil {
			return rec, err
		}
	case agentapi.WipeDiscard, agentapi.WipeSecure:
		before, err := snapshot(f, regions)
		if err != nil {
			return rec, err
		}
		var mech, note string
		if method == agentapi.WipeDiscard {
			mech, note, err = discard(f, size)
		} else {
			mech, note, err = deviceErase(ctx, f, size)
		}
		if errors.Is(err, errUnsupported) {
			if err := overwriteAll(strings.TrimPrefix(err.Error(), errUnsupported.Error()+": ")); err != nil {
				return rec, err
			}
			break
		}
		if err != nil {
			return rec, err
		}
		rec.Mechanism, rec.Note, rec.Bytes = mech, note, size
		dropCache(f)
		n, changed, err := verifyGone(f, regions, before)
		if errors.Is(err, ErrNotErased) && method == agentapi.WipeDiscard {
			// The device kept (some of) the data it was told is unused:
			// its choice, which a discard allows.
			if err := overwriteAll(fmt.Sprintf("the device still returned old data after %s (%v)", mech, err)); err != nil {
				return rec, err
			}
			break
		}
		rec.VerifiedBytes = n
		if err != nil {
			return rec, err
		}
		if changed > 0 {
			rec.Note += fmt.Sprintf("; %d sampled sectors read back as other data than zeros (the drive does not promise zeros), none as their old content", changed)
		}
		rec.Verified = true
		rereadPartitions(f, nil)
		return rec, nil
	}
	if err := f.Sync(); err != nil {
		return rec, fmt.Errorf("sync: %w", err)
	}
	dropCache(f)
	n, err := verifyZero(f, regions)
	rec.VerifiedBytes = n
	if err != nil {
		return rec, err
	}
	rec.Verified = true
	rereadPartitions(f, nil)
	return rec, nil
}

// discard tells the device the whole of it is unused (BLKDISCARD).
func discard(f *os.File, size uint64) (mechanism, note string, err error) {
	if err := ioctlRange(f, unix.BLKDISCARD, size); err != nil {
		return "", "", fmt.Errorf("%w: the device cannot discard (BLKDISCARD: %v)", errUnsupported, err)
	}
	return "blkdiscard", "discarded (BLKDISCARD)", nil
}

// deviceErase asks the drive to erase itself: NVMe first, then ATA, then
// the kernel's secure discard. When none is possible the error wraps
// errUnsupported and says, for each, why.
func deviceErase(ctx context.Context, f *os.File, size uint64) (mechanism, note string, err error) {
	var why []string
	for _, try := range []func() (string, string, error){
		func() (string, string, error) { return nvmeErase(ctx, f) },
		func() (string, string, error) { return ataErase(f) },
		func() (string, string, error) {
			if err := ioctlRange(f, unix.BLKSECDISCARD, size); err != nil {
				return "", "", fmt.Errorf("%w: BLKSECDISCARD: %v", errUnsupported, err)
			}
			return "blksecdiscard", "erased by the device (BLKSECDISCARD)", nil
		},
	} {
		mech, note, err := try()
		if err == nil {
			return mech, note, nil
		}
		if !errors.Is(err, errUnsupported) {
			return "", "", err
		}
		why = append(why, strings.TrimPrefix(err.Error(), errUnsupported.Error()+": "))
	}
	return "", "", fmt.Errorf("%w: the device cannot erase itself (%s)", errUnsupported, strings.Join(why, "; "))
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

// region is a stretch of the disk the verification reads.
type region struct{ off, n uint64 }

// sampleRegions are the first and last MiB and, unless endsOnly,
// verifySamples regions spread over the whole disk.
func sampleRegions(size uint64, endsOnly bool) []region {
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
	return regions
}

// readRegions reads each region through an aligned buffer and hands it
// to fn; it returns how many bytes it read.
func readRegions(f *os.File, regions []region, fn func(off uint64, b []byte) error) (uint64, error) {
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
		if err := fn(r.off, buf[:n]); err != nil {
			return read, err
		}
	}
	return read, nil
}

// verifyZero fails if any byte of the regions is not zero. It returns how
// many bytes it read.
func verifyZero(f *os.File, regions []region) (uint64, error) {
	return readRegions(f, regions, func(off uint64, b []byte) error {
		if i := nonZero(b); i >= 0 {
			return fmt.Errorf("%w: byte %d is not zero", ErrNotErased, off+uint64(i))
		}
		return nil
	})
}

// sector is the unit a device erase is checked in.
const sector = 512

// sectorSums are the hashes of the sampled sectors before an erase, by
// offset; sectors of zeros are left out (nothing to find again).
type sectorSums struct {
	seed maphash.Seed
	sums map[uint64]uint64
}

// snapshot hashes every sector of the regions.
func snapshot(f *os.File, regions []region) (sectorSums, error) {
	s := sectorSums{seed: maphash.MakeSeed(), sums: map[uint64]uint64{}}
	_, err := readRegions(f, regions, func(off uint64, b []byte) error {
		for i := 0; i < len(b); i += sector {
			sec := b[i:min(i+sector, len(b))]
			if nonZero(sec) >= 0 {
				s.sums[off+uint64(i)] = maphash.Bytes(s.seed, sec)
			}
		}
		return nil
	})
	return s, err
}

// verifyGone fails if any sampled sector reads back as what it held
// before; it returns the bytes read and how many sectors read back as
// neither zeros nor their old content.
func verifyGone(f *os.File, regions []region, before sectorSums) (read uint64, changed int, err error) {
	read, err = readRegions(f, regions, func(off uint64, b []byte) error {
		for i := 0; i < len(b); i += sector {
			sec := b[i:min(i+sector, len(b))]
			if nonZero(sec) < 0 {
				continue
			}
			at := off + uint64(i)
			if sum, ok := before.sums[at]; ok && sum == maphash.Bytes(before.seed, sec) {
				return fmt.Errorf("%w: sector at byte %d still holds its old content", ErrNotErased, at)
			}
			changed++
		}
		return nil
	})
	return read, changed, err
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
