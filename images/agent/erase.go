package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/pxe/agentapi"
)

// eraseChunk is how much one write of an overwrite covers; verifySamples
// how many regions, spread evenly over the disk, the read-back checks
// (beside the first and last MiB), verifySample the size of each.
//
// eraseWriters writes and verifyReaders reads are kept in flight: one
// at a time leaves the device idle between the end of one and the
// submission of the next, which on a fast device (NVMe, a loop device
// with direct I/O) cost a tenth of the overwrite's time and a third of
// the read-back's, whose reads are small and scattered.
const (
	eraseChunk    = 4 << 20
	eraseWriters  = 4
	verifySamples = 256
	verifySample  = 64 << 10
	verifyReaders = 4
)

// ErrNotErased is a disk that still holds something other than zeros where
// the wipe wrote zeros: it lies about its writes, or something wrote
// after.
var ErrNotErased = errors.New("the disk still holds data after the wipe")

// EraseDisk erases the block device (or file) at path by method and
// verifies the result. progress, when set, is told of bytes erased, one
// call at a time though not always from the same goroutine.
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
		// Not synced here: every way out of the switch below that
		// overwrote syncs before the read-back.
		return overwrite(ctx, size, progress, func(b []byte, off uint64) error {
			return writeChunk(f, direct, b, off)
		})
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

// overwrite writes zeros over size bytes by write, eraseWriters chunks at
// a time. progress is told of the bytes written so far, after each chunk.
func overwrite(ctx context.Context, size uint64, progress func(done, total uint64), write func(b []byte, off uint64) error) error {
	// One buffer serves every writer: they only read it.
	buf, free, err := alignedBuffer(eraseChunk)
	if err != nil {
		return err
	}
	defer free()
	var (
		mu   sync.Mutex
		done uint64
	)
	chunks := int((size + eraseChunk - 1) / eraseChunk)
	return inParallel(ctx, eraseWriters, chunks, func(_, i int) error {
		off := uint64(i) * eraseChunk
		n := min(eraseChunk, size-off)
		if err := write(buf[:n], off); err != nil {
			return err
		}
		if progress != nil {
			// Under the lock, so that the calls never overlap and
			// done only grows.
			mu.Lock()
			done += n
			progress(done, size)
			mu.Unlock()
		}
		return nil
	})
}

// writeChunk writes b at off in f; errors say the offset.
func writeChunk(f *os.File, direct bool, b []byte, off uint64) error {
	_, err := f.WriteAt(b, int64(off))
	if err == nil {
		return nil
	}
	// O_DIRECT needs sector-sized writes; a tail that is not one is
	// written through the cache.
	if !direct || len(b)%512 == 0 {
		return fmt.Errorf("write at %d: %w", off, err)
	}
	g, err := os.OpenFile(f.Name(), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write at %d: %w", off, err)
	}
	defer g.Close()
	if _, err := g.WriteAt(b, int64(off)); err != nil {
		return fmt.Errorf("write at %d: %w", off, err)
	}
	return nil
}

// inParallel runs do(worker, i) for every i in [0, n) on up to workers
// goroutines (worker is the goroutine's number, for its own buffers). It
// stops handing out work at the first error or when ctx is done, and
// returns the error of the lowest i that failed, so that the one
// reported is the one a loop in order would have met first among those
// tried.
func inParallel(ctx context.Context, workers, n int, do func(worker, i int) error) error {
	var (
		next   atomic.Int64
		failed atomic.Bool
		wg     sync.WaitGroup
		mu     sync.Mutex
		firstI = n
		first  error
	)
	for w := range min(workers, n) {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = do(w, i)
				}
				if err != nil {
					mu.Lock()
					if i < firstI {
						firstI, first = i, err
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	return first
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
		// From a page, as O_DIRECT needs, should the size not be a
		// multiple of one.
		last := (size - wipeBytes) &^ 4095
		regions = append(regions, region{last, size - last})
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

// readRegions reads the regions, verifyReaders at a time, each through
// an aligned buffer, and hands each to fn; fn is called for one region at
// a time, in no set order. It returns how many bytes it read.
func readRegions(f *os.File, regions []region, fn func(off uint64, b []byte) error) (uint64, error) {
	// O_DIRECT reads whole pages into buffers that start on one: a
	// region that ends short of a page (at the end of a disk whose size
	// is not a multiple of one) is read to the page's end, which comes
	// back short.
	page := func(n uint64) uint64 { return (n + 4095) &^ 4095 }
	stride := uint64(4096)
	for _, r := range regions {
		stride = max(stride, page(r.n))
	}
	readers := min(verifyReaders, len(regions))
	bufs, free, err := alignedBuffer(max(1, readers) * int(stride))
	if err != nil {
		return 0, err
	}
	defer free()
	var (
		mu   sync.Mutex
		read uint64
	)
	err = inParallel(context.Background(), readers, len(regions), func(w, i int) error {
		r := regions[i]
		buf := bufs[uint64(w)*stride:][:page(r.n)]
		n, err := f.ReadAt(buf, int64(r.off))
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read back at %d: %w", r.off, err)
		}
		n = min(n, int(r.n))
		mu.Lock()
		defer mu.Unlock()
		read += uint64(n)
		return fn(r.off, buf[:n])
	})
	return read, err
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

// zeroBlock is what nonZero compares b with, a block at a time.
var zeroBlock [4096]byte

// nonZero is the index of the first byte of b that is not zero, or -1.
// It compares whole blocks first (bytes.Equal is vectorised; a loop over
// the bytes, at some 4 GB/s, added a fifth to the read-back's time) and
// looks for the byte only in a block that differs.
func nonZero(b []byte) int {
	for at := 0; at < len(b); at += len(zeroBlock) {
		blk := b[at:min(at+len(zeroBlock), len(b))]
		if bytes.Equal(blk, zeroBlock[:len(blk)]) {
			continue
		}
		for i, c := range blk {
			if c != 0 {
				return at + i
			}
		}
	}
	return -1
}
