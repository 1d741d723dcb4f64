package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/pxe/agentapi"
)

// oldImage is what the disk held before the wipe: a pattern no zero
// region matches.
func oldImage(size int) []byte {
	b := bytes.Repeat([]byte("OLD-IMAGE-metal-"), size/16+1)
	return b[:size]
}

// loopDevice attaches a file holding the old image as a loop block
// device, detached when the test ends.
func loopDevice(t *testing.T, size int) (dev, backing string) {
	t.Helper()
	testenv.Root(t, "a loop device")
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Fatal("losetup is needed: apt-get install -y util-linux")
	}
	backing = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(backing, oldImage(size), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, backing
}

// TestEraseLoopDevice erases a loop device holding an old image by each
// method and reads back all of it, through the device and through the
// file behind it: after zero and secure not one byte of the old image is
// left, and the record says what was done; quick clears only the ends, as
// its help says.
func TestEraseLoopDevice(t *testing.T) {
	const size = 48 << 20
	tests := map[agentapi.WipeMethod]struct {
		wantMethod  agentapi.WipeMethod
		mechanism   string
		wantBytes   uint64
		wholeDisk   bool
		note, note2 string
	}{
		agentapi.WipeZero: {wantMethod: agentapi.WipeZero, mechanism: "overwrite", wantBytes: size, wholeDisk: true},
		// A loop device is no NVMe or ATA drive and cannot erase itself:
		// the agent overwrites it and says why, for each way it tried.
		agentapi.WipeSecure: {wantMethod: agentapi.WipeZero, mechanism: "overwrite", wantBytes: size, wholeDisk: true,
			note: "not an NVMe namespace", note2: "BLKSECDISCARD"},
		// A loop device discards by punching holes in its file, which
		// read back as zeros.
		agentapi.WipeDiscard: {wantMethod: agentapi.WipeDiscard, mechanism: "blkdiscard", wantBytes: size, wholeDisk: true, note: "BLKDISCARD"},
		agentapi.WipeQuick:   {wantMethod: agentapi.WipeQuick, mechanism: "ends", wantBytes: 2 * wipeBytes},
	}
	for method, tc := range tests {
		t.Run(string(method), func(t *testing.T) {
			dev, backing := loopDevice(t, size)
			var last uint64
			rec, err := EraseDisk(context.Background(), dev, method, func(done, _ uint64) { last = done })
			if err != nil {
				t.Fatalf("erase: %v (record %+v)", err, rec)
			}
			if rec.Duration <= 0 || rec.Method != tc.wantMethod || rec.Mechanism != tc.mechanism || rec.Bytes != tc.wantBytes || !rec.Verified ||
				!strings.Contains(rec.Note, tc.note) || !strings.Contains(rec.Note, tc.note2) {
				t.Errorf("record = %+v; want method %s by %s, %d bytes, verified, note with %q and %q", rec, tc.wantMethod, tc.mechanism, tc.wantBytes, tc.note, tc.note2)
			}
			if tc.mechanism == "overwrite" && last != size {
				t.Errorf("progress ended at %d", last)
			}
			if tc.wholeDisk && rec.VerifiedBytes < 2*wipeBytes+verifySamples*verifySample/2 {
				t.Errorf("verified %d bytes", rec.VerifiedBytes)
			}
			for _, path := range []string{dev, backing} {
				f, _, err := openDirect(path)
				if err != nil {
					t.Fatal(err)
				}
				dropCache(f)
				got := make([]byte, size)
				if _, err := f.ReadAt(got, 0); err != nil {
					t.Fatal(err)
				}
				f.Close()
				if tc.wholeDisk {
					if i := nonZero(got); i >= 0 {
						t.Fatalf("%s: byte %d of the old image is still readable after a %s wipe", path, i, method)
					}
					continue
				}
				if nonZero(got[:wipeBytes]) >= 0 || nonZero(got[size-wipeBytes:]) >= 0 {
					t.Errorf("%s: quick wipe left the ends", path)
				}
				if !bytes.Contains(got, []byte("OLD-IMAGE")) {
					t.Errorf("%s: quick wipe is documented to leave the middle; it changed", path)
				}
			}
		})
	}
}

// TestVerifyCatchesLyingDisk: a disk whose content is not zero where the
// wipe wrote zeros (it dropped the writes) fails verification.
func TestVerifyCatchesLyingDisk(t *testing.T) {
	const size = 16 << 20
	path := filepath.Join(t.TempDir(), "liar.img")
	img := make([]byte, size)
	copy(img[size/2:], "still here")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := verifyZero(f, sampleRegions(size, false)); !errors.Is(err, ErrNotErased) {
		t.Errorf("verify = %v, want ErrNotErased", err)
	}
	if _, err := EraseDisk(context.Background(), path, "shred", nil); err == nil {
		t.Error("an unknown method was accepted")
	}
}

// TestVerifyGone: after a device erase, sectors that read back as zeros
// or as other data (a crypto erase) pass; one sector still holding its
// old content fails.
func TestVerifyGone(t *testing.T) {
	const size = 8 << 20
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, oldImage(size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	regions := sampleRegions(size, false)
	before, err := snapshot(f, regions)
	if err != nil {
		t.Fatal(err)
	}
	// Noise where the old image was, as a crypto erase leaves, but for
	// one sector in the middle of a sample.
	noise := bytes.Repeat([]byte{0x5a, 0xa5, 0x3c}, size/3+1)[:size]
	keep := regions[len(regions)/2].off + 1024
	copy(noise[keep:keep+sector], oldImage(size)[keep:keep+sector])
	if _, err := f.WriteAt(noise, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := verifyGone(f, regions, before); !errors.Is(err, ErrNotErased) || !strings.Contains(err.Error(), fmt.Sprint(keep)) {
		t.Errorf("one old sector left: verify = %v, want ErrNotErased at byte %d", err, keep)
	}
	copy(noise[keep:keep+sector], make([]byte, sector))
	if _, err := f.WriteAt(noise, 0); err != nil {
		t.Fatal(err)
	}
	_, changed, err := verifyGone(f, regions, before)
	if err != nil || changed == 0 {
		t.Errorf("noise and zeros: verify = %v with %d changed sectors, want nil and some", err, changed)
	}
}

// TestOverwrite: the writers together cover every byte once, whatever
// the size (a tail shorter than a chunk, or than a sector); progress only
// grows and ends at the size; a failed write or a cancelled context fails
// the overwrite, with the offset of the lowest chunk that failed.
func TestOverwrite(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		size    uint64
		failAt  int64 // the chunk whose write fails, or -1
		wantErr string
	}{
		{name: "empty", size: 0, failAt: -1},
		{name: "one chunk", size: eraseChunk, failAt: -1},
		{name: "less than a chunk", size: eraseChunk / 3, failAt: -1},
		{name: "more chunks than writers", size: (2*eraseWriters + 1) * eraseChunk, failAt: -1},
		{name: "tail of sectors", size: 5*eraseChunk + 8*sector, failAt: -1},
		{name: "tail not a sector", size: 5*eraseChunk + 1000, failAt: -1},
		{name: "failing write", size: 3 * eraseWriters * eraseChunk, failAt: 5, wantErr: fmt.Sprintf("write at %d: EIO", 5*eraseChunk)},
		{name: "failing tail", size: 3*eraseChunk + 1000, failAt: 3, wantErr: fmt.Sprintf("write at %d: EIO", 3*eraseChunk)},
		{name: "cancelled", ctx: cancelled, size: 4 * eraseChunk, failAt: -1, wantErr: context.Canceled.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			var (
				mu      sync.Mutex
				written = map[uint64]int{}
				calls   int
				last    uint64
			)
			write := func(b []byte, off uint64) error {
				if nonZero(b) >= 0 {
					t.Errorf("write at %d: not zeros", off)
				}
				if int64(off/eraseChunk) == tc.failAt {
					return fmt.Errorf("write at %d: %w", off, errors.New("EIO"))
				}
				mu.Lock()
				defer mu.Unlock()
				written[off] = len(b)
				return nil
			}
			progress := func(done, total uint64) {
				calls++
				if done <= last || done > total || total != tc.size {
					t.Errorf("progress(%d, %d) after %d", done, total, last)
				}
				last = done
			}
			err := overwrite(ctx, tc.size, progress, write)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("overwrite = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var covered uint64
			for off := uint64(0); off < tc.size; off += eraseChunk {
				if n := written[off]; uint64(n) != min(eraseChunk, tc.size-off) {
					t.Errorf("chunk at %d: wrote %d bytes", off, n)
				}
				covered += uint64(written[off])
			}
			if covered != tc.size || len(written) != calls || last != tc.size {
				t.Errorf("wrote %d of %d bytes in %d writes, %d progress calls ending at %d", covered, tc.size, len(written), calls, last)
			}
		})
	}
}

// TestEraseFile: a wipe = zero of a file whose size is no multiple of a
// chunk, nor of a sector, leaves not one byte of it, and verifies.
func TestEraseFile(t *testing.T) {
	for _, size := range []int{3*eraseChunk + 1000, eraseChunk/2 + 4096, 2*wipeBytes + 7} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(path, oldImage(size), 0o600); err != nil {
				t.Fatal(err)
			}
			rec, err := EraseDisk(context.Background(), path, agentapi.WipeZero, nil)
			if err != nil || !rec.Verified || rec.Bytes != uint64(size) {
				t.Fatalf("erase = %+v, %v", rec, err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if i := nonZero(got); i >= 0 || len(got) != size {
				t.Errorf("byte %d of %d is not zero", i, len(got))
			}
		})
	}
}

// TestNonZero: the first byte that is not zero is found wherever it is,
// in a whole block or in a short last one.
func TestNonZero(t *testing.T) {
	const n = 3*len(zeroBlock) + 100
	if i := nonZero(make([]byte, n)); i != -1 {
		t.Errorf("zeros: %d", i)
	}
	for _, at := range []int{0, 1, len(zeroBlock) - 1, len(zeroBlock), 2*len(zeroBlock) + 17, n - 1} {
		b := make([]byte, n)
		b[at] = 1
		b[n-1] = 2
		if i := nonZero(b); i != at {
			t.Errorf("first non-zero at %d: got %d", at, i)
		}
	}
}
