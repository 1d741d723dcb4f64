//go:build !linux

package images

import "os"

// writeBehind writes a download to its file; only Linux is asked to
// write it back as it comes (writebehind_linux.go).
type writeBehind struct{ f *os.File }

func newWriteBehind(f *os.File, at int64) *writeBehind { return &writeBehind{f: f} }

func (w *writeBehind) Write(b []byte) (int, error) { return w.f.Write(b) }
