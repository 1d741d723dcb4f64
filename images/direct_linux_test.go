package images

import (
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
