package images

import (
	"hash"
	"io"
)

// copyHashed copies src to dst and writes the same bytes to h, hashing on
// a goroutine of its own while the next buffer is read and written: on a
// machine with two CPUs a download's hash and its copy into the page
// cache (each about as costly as the other) then take the time of the
// slower, not of both. h has seen every byte copied once copyHashed
// returns, in order, but only those: after an error it may have seen
// fewer than were written.
func copyHashed(dst io.Writer, h hash.Hash, src io.Reader) (int64, error) {
	const (
		bufSize = 1 << 20
		bufs    = 4
	)
	free := make(chan []byte, bufs)
	for range bufs {
		free <- make([]byte, bufSize)
	}
	full := make(chan []byte, bufs)
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range full {
			h.Write(b) // a hash.Hash never fails
			free <- b[:cap(b)]
		}
	}()
	defer func() {
		close(full)
		<-hashed
	}()
	var n int64
	for {
		b := <-free
		// Whole buffers: a socket read returns what has come, often a
		// fraction of one, and each buffer costs the hasher a hand-off.
		// Not io.ReadFull, which would turn the source's own
		// io.ErrUnexpectedEOF (net/http's for a body cut short) into
		// its own, meaning an end.
		k := 0
		var rerr error
		for k < len(b) && rerr == nil {
			var m int
			m, rerr = src.Read(b[k:])
			k += m
		}
		if k > 0 {
			w, werr := dst.Write(b[:k])
			n += int64(w)
			if werr == nil && w < k {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, werr
			}
			full <- b[:k]
		}
		if rerr == io.EOF { // as io.Copy: the end is io.EOF itself
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
