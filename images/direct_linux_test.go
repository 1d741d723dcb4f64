package images

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDirectChosen checks which destinations get O_DIRECT: the write path
// silently falling back to the page cache would cost the throughput the
// benchmark measures, not correctness, so only this test would see it.
func TestDirectChosen(t *testing.T) {
	dir := t.TempDir()
	open := func(flag int, at int64) func(t *testing.T) *os.File {
		return func(t *testing.T) *os.File {
			f, err := os.OpenFile(filepath.Join(dir, t.Name()[len("TestDirectChosen/"):]), os.O_RDWR|os.O_CREATE|flag, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if at > 0 {
				if _, err := f.Write(make([]byte, at)); err != nil {
					t.Fatal(err)
				}
			}
			return f
		}
	}
	cases := map[string]struct {
		open   func(t *testing.T) *os.File
		direct bool
	}{
		"file":               {open(0, 0), true},
		"file at 4096":       {open(0, 4096), true},
		"file at 100":        {open(0, 100), false},
		"file opened append": {open(os.O_APPEND, 0), false},
		"pipe":               {func(t *testing.T) *os.File { r, w, _ := os.Pipe(); t.Cleanup(func() { r.Close() }); return w }, false},
		"character device":   {func(t *testing.T) *os.File { f, _ := os.OpenFile("/dev/null", os.O_WRONLY, 0); return f }, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := c.open(t)
			defer f.Close()
			before, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
			if err != nil {
				t.Fatal(err)
			}
			d := newDiskWriter(f)
			during, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
			if got := during&unix.O_DIRECT != 0; got != c.direct || (d.f != nil) != c.direct {
				t.Errorf("O_DIRECT on = %v (writer direct %v), want %v", got, d.f != nil, c.direct)
			}
			if err := d.restore(); err != nil {
				t.Fatal(err)
			}
			if after, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); after != before {
				t.Errorf("flags after restore %#o, want %#o", after, before)
			}
		})
	}
}

// TestDirectFlushes writes images around flushEvery through the direct
// path, as the pipeline does (full buffers, then the tail): the writer
// flushes in the background once flushEvery bytes are written, never
// before, and what is on disk after is the image, byte for byte, with the
// file's flags and offset as before.
func TestDirectFlushes(t *testing.T) {
	cases := map[string]struct {
		size int
		// minFlushes and maxFlushes bound the flushes begun: one runs at a
		// time, so how many depends on the disk's speed, not only on size.
		minFlushes, maxFlushes int
	}{
		"less than flushEvery":       {flushEvery - directAlign, 0, 0},
		"flushEvery":                 {flushEvery, 1, 1},
		"flushEvery and a tail":      {flushEvery + 517, 1, 1},
		"twice flushEvery, a buffer": {2*flushEvery + bufSize + directAlign, 1, 2},
	}
	bufs := alignedBufs(1, bufSize)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			image := make([]byte, c.size)
			for i := range image {
				image[i] = byte(i*7 + i>>12)
			}
			path := filepath.Join(t.TempDir(), "disk.img")
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			d := newDiskWriter(f)
			if d.f == nil {
				t.Skip("no direct i/o here")
			}
			for off := 0; off < len(image); off += bufSize {
				b := bufs[0][:copy(bufs[0], image[off:])]
				if n, err := d.Write(b); err != nil || n != len(b) {
					t.Fatalf("Write at %d: %d, %v", off, n, err)
				}
			}
			flushes := d.flushes
			if err := d.restore(); err != nil {
				t.Fatal(err)
			}
			if flushes < c.minFlushes || flushes > c.maxFlushes {
				t.Errorf("%d flushes begun, want %d to %d", flushes, c.minFlushes, c.maxFlushes)
			}
			if d.flushing != nil {
				t.Error("a flush still runs after restore")
			}
			if off, err := f.Seek(0, io.SeekCurrent); err != nil || off != int64(c.size) {
				t.Errorf("offset after restore %d (%v), want %d", off, err, c.size)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, image) {
				t.Errorf("file holds %d bytes that are not the %d of the image", len(got), len(image))
			}
		})
	}
}
