package images

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWriteBehind writes through writeBehind in pieces of several sizes,
// from the start of a file and after bytes already there (a resumed
// download), and checks that the file holds what was written and that
// what was handed to write-back is no longer dirty in the page cache
// while the writing goes on: the disk has it, or has it under way.
func TestWriteBehind(t *testing.T) {
	for _, tc := range []struct {
		name        string
		had, size   int
		piece       int
		wantWritten bool // some of it reached the disk before the end
	}{
		{"small pieces across windows", 0, 3*writeBehindWindow + 12345, 4096, true},
		{"1 MiB pieces, as the download's copy", 0, 4 * writeBehindWindow, 1 << 20, true},
		{"one piece larger than a window", 0, 2*writeBehindWindow + 1, 2*writeBehindWindow + 1, false},
		{"resumed after part of a window", 5 << 20, 3 * writeBehindWindow, 1 << 20, true},
		{"less than a window", 0, 1000, 100, false},
		{"nothing", 0, 0, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var fs unix.Statfs_t
			if err := unix.Statfs(dir, &fs); err != nil {
				t.Fatal(err)
			}
			data := make([]byte, tc.had+tc.size)
			r := rand.NewChaCha8([32]byte{1})
			_, _ = r.Read(data)
			path := filepath.Join(dir, "part")
			if err := os.WriteFile(path, data[:tc.had], 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Seek(int64(tc.had), 0); err != nil {
				t.Fatal(err)
			}
			w := newWriteBehind(f, int64(tc.had))
			for rest := data[tc.had:]; len(rest) > 0; {
				k := min(tc.piece, len(rest))
				n, err := w.Write(rest[:k])
				if err != nil || n != k {
					t.Fatalf("Write: %d of %d, %v", n, k, err)
				}
				rest = rest[k:]
			}
			if w.refused {
				t.Fatalf("the file system (type %#x) refused write-back", fs.Type)
			}
			if tc.wantWritten {
				if w.written <= int64(tc.had) {
					t.Errorf("nothing waited for: written at %d, had %d", w.written, tc.had)
				}
				if fs.Type != unix.TMPFS_MAGIC {
					assertNotDirty(t, f, int64(tc.had), w.written)
				}
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("the file differs from what was written (%d bytes, want %d)", len(got), len(data))
			}
		})
	}
}

// assertNotDirty checks that the page cache holds no dirty page of f's
// bytes from off to end (cachestat(2), Linux 6.5; skipped before).
func assertNotDirty(t *testing.T, f *os.File, off, end int64) {
	t.Helper()
	var st unix.Cachestat_t
	err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{Off: uint64(off), Len: uint64(end - off)}, &st, 0)
	if errors.Is(err, unix.ENOSYS) {
		t.Log("no cachestat(2) on this kernel: dirty pages not checked")
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if st.Dirty != 0 {
		t.Errorf("%d dirty pages in bytes %d-%d, handed to write-back and waited for", st.Dirty, off, end)
	}
}
