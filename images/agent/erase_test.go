package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metal-dev/metal/inventory"
)

// oldImage is what the disk held before the wipe: a pattern no zero
// region matches.
func oldImage(size int) []byte {
	b := bytes.Repeat([]byte("OLD-IMAGE-metal-"), size/16)
	return b[:size]
}

// loopDevice attaches a file holding the old image as a loop block
// device, detached when the test ends.
func loopDevice(t *testing.T, size int) (dev, backing string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("attaching a loop device needs root")
	}
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
	tests := map[inventory.WipeMethod]struct {
		wantMethod inventory.WipeMethod
		wantBytes  uint64
		wholeDisk  bool
		note       string
	}{
		inventory.WipeZero: {wantMethod: inventory.WipeZero, wantBytes: size, wholeDisk: true},
		// A loop device cannot erase itself: the agent overwrites it and
		// says so.
		inventory.WipeSecure: {wantMethod: inventory.WipeZero, wantBytes: size, wholeDisk: true, note: "BLKSECDISCARD"},
		inventory.WipeQuick:  {wantMethod: inventory.WipeQuick, wantBytes: 2 * wipeBytes},
	}
	for method, tc := range tests {
		t.Run(string(method), func(t *testing.T) {
			dev, backing := loopDevice(t, size)
			var last uint64
			rec, err := EraseDisk(context.Background(), dev, method, func(done, _ uint64) { last = done })
			if err != nil {
				t.Fatalf("erase: %v (record %+v)", err, rec)
			}
			if rec.Method != tc.wantMethod || rec.Bytes != tc.wantBytes || !rec.Verified || !strings.Contains(rec.Note, tc.note) {
				t.Errorf("record = %+v; want method %s, %d bytes, verified, note with %q", rec, tc.wantMethod, tc.wantBytes, tc.note)
			}
			if tc.wholeDisk && (last != size || rec.VerifiedBytes < 2*wipeBytes+verifySamples*verifySample/2) {
				t.Errorf("progress ended at %d, verified %d bytes", last, rec.VerifiedBytes)
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
	if _, err := verifyZero(f, size, false); !errors.Is(err, ErrNotErased) {
		t.Errorf("verify = %v, want ErrNotErased", err)
	}
	if _, err := EraseDisk(context.Background(), path, "shred", nil); err == nil {
		t.Error("an unknown method was accepted")
	}
}
