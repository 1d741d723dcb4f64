//go:build !linux

package images

import "io"

// diskWriter writes through the page cache where direct I/O is not
// implemented (metal's agent and server run on Linux).
type diskWriter struct{ io.Writer }

func newDiskWriter(w io.Writer) *diskWriter { return &diskWriter{w} }

func (d *diskWriter) restore() error { return nil }

func alignedBufs(n, size int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs
}
