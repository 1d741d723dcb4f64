package images

import (
	"context"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// The pipeline of Write, one goroutine per stage:
//
//	src ─read─▶ source buffers ─┬─▶ hash
//	                            └─▶ [decompress ─▶ output buffers] ─▶ write dst
//
// The hash and the writer (or the decompressor) read the same source buffer
// at the same time; a buffer goes back to the reader when both are done with
// it. So the sha256 of the image, the copy from the network or page cache
// and the write to the disk overlap instead of adding up: on two cores the
// slowest stage sets the pace, not the sum of them.

const (
	// bufSize is the size of each buffer and so of each write to dst.
	// Disks take large sequential writes best; 4 MiB is what dd users pick
	// (bs=4M) and keeps the per-call overhead negligible.
	bufSize = 4 << 20
	// srcBufs and outBufs are how many buffers of the source and of the
	// decompressed stream circulate: enough for each stage to hold one while
	// another is queued, so no stage waits for a slower one's next buffer.
	// At most 36 MiB (each pool is aligned to a huge page: alignedBufs),
	// which the agent's RAM-only system affords.
	srcBufs = 4
	outBufs = 4
	// progressEvery is how many bytes of src pass between progress calls.
	progressEvery = 1 << 20
)

// buffer is one of the pipeline's large buffers; refs counts the stages
// still reading it.
type buffer struct {
	data []byte
	n    int
	refs atomic.Int32
	free chan<- *buffer
}

func (b *buffer) bytes() []byte { return b.data[:b.n] }

// release hands the buffer back to its pool once its last reader is done.
// The pool holds every buffer it owns, so this never blocks.
func (b *buffer) release() {
	if b.refs.Add(-1) == 0 {
		b.free <- b
	}
}

// newPool returns n buffers, aligned for direct I/O, in a channel they
// return to.
func newPool(n int) chan *buffer {
	free := make(chan *buffer, n)
	for _, b := range alignedBufs(n, bufSize) {
		free <- &buffer{data: b, free: free}
	}
	return free
}

// result is what each stage of one Write ended with.
type result struct {
	read     uint64 // bytes of src
	written  int64  // bytes written to dst
	srcErr   error  // reading src failed (never io.EOF)
	decErr   error  // the decompressor failed
	writeErr error  // writing dst failed
}

// run streams src through the stages into out and waits for all of them.
// A write error stops every stage; a decompressor error does not stop the
// reading and hashing of src, so the checksum still covers every byte.
func run(ctx context.Context, out io.Writer, src io.Reader, h hash.Hash, dec decoder, opts WriteOptions) result {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	s := &reader{r: src, free: newPool(srcBufs), data: make(chan *buffer, srcBufs), progress: opts.Progress, total: opts.Total}
	var wg sync.WaitGroup
	if h != nil {
		s.hashed = make(chan *buffer, srcBufs)
		wg.Go(func() {
			for b := range s.hashed {
				if ctx.Err() == nil {
					h.Write(b.bytes())
				}
				b.release()
			}
		})
	}
	wg.Go(func() { s.run(ctx) })

	var res result
	if dec == nil {
		// A raw image: the source buffers are written as they are.
		res.written, res.writeErr = writeAll(ctx, stop, out, s.data)
	} else {
		outFree := newPool(outBufs)
		decoded := make(chan *buffer, outBufs)
		wg.Go(func() { res.written, res.writeErr = writeAll(ctx, stop, out, decoded) })
		res.decErr = decode(ctx, dec, &chanReader{src: s}, outFree, decoded)
	}
	wg.Wait()
	res.read, res.srcErr = s.read, s.err
	return res
}

// reader reads src into buffers and hands each to the hash (when there is
// one) and to the consumer on data.
type reader struct {
	r        io.Reader
	free     chan *buffer
	data     chan *buffer
	hashed   chan *buffer // nil without a checksum
	progress func(done, total uint64)
	total    uint64

	// read and err are set before data is closed: bytes read, and why
	// reading stopped early (nil at the end of src).
	read uint64
	err  error
}

func (s *reader) run(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			s.err = fmt.Errorf("panic: %v", p)
		}
		close(s.data)
		if s.hashed != nil {
			close(s.hashed)
		}
	}()
	refs := int32(1)
	if s.hashed != nil {
		refs = 2
	}
	// ctxReader (cache.go) sees a cancel between two reads of a fast
	// source, not only at the next buffer.
	r := &ctxReader{ctx: ctx, r: s.r}
	var reported uint64
	for {
		var b *buffer
		select {
		case b = <-s.free:
		case <-ctx.Done():
			s.err = ctx.Err()
			return
		}
		n, err := fill(r, b.data)
		if n > 0 {
			b.n = n
			b.refs.Store(refs)
			s.read += uint64(n)
			if s.progress != nil && s.read-reported >= progressEvery {
				reported = s.read
				s.progress(s.read, s.total)
			}
			// The channels hold as many buffers as there are: never blocks.
			if s.hashed != nil {
				s.hashed <- b
			}
			s.data <- b
		} else {
			s.free <- b
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			s.err = err
			return
		}
	}
}

// end is what reading past the last buffer returns: io.EOF, or why the
// source stopped. Only valid once data is closed.
func (s *reader) end() error {
	if s.err != nil {
		return s.err
	}
	return io.EOF
}

// writeAll writes each buffer from in to w, in order, until in is closed.
// After a write error (which stops the pipeline) it only hands buffers
// back, so the stages before it can end.
func writeAll(ctx context.Context, stop func(), w io.Writer, in <-chan *buffer) (written int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
			stop()
			for b := range in {
				b.release()
			}
		}
	}()
	for b := range in {
		if err == nil && ctx.Err() == nil {
			var n int
			n, err = w.Write(b.bytes())
			written += int64(n)
			if err == nil && n < b.n {
				err = io.ErrShortWrite
			}
			if err != nil {
				stop()
			}
		}
		b.release()
	}
	return written, err
}

// decode decompresses what in reads into buffers sent on out, and closes
// out. Whatever the decompressor leaves of the source (trailing data, or
// all of it after an error) is read to its end for the hash.
func decode(ctx context.Context, dec decoder, in *chanReader, free chan *buffer, out chan<- *buffer) error {
	err := decodeInto(ctx, dec, in, free, out)
	close(out)
	in.drain()
	return err
}

func decodeInto(ctx context.Context, dec decoder, in io.Reader, free chan *buffer, out chan<- *buffer) (err error) {
	r, closeDec, err := dec(in)
	if err != nil {
		return err
	}
	// The zstd decoder reads on goroutines of its own: closing it waits for
	// them, so nothing reads in after this returns.
	defer closeDec()
	for {
		var b *buffer
		select {
		case b = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		n, err := fill(r, b.data)
		if n > 0 {
			b.n = n
			b.refs.Store(1)
			out <- b // out holds as many buffers as there are
		} else {
			free <- b
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// chanReader reads the source buffers in order, handing each back once it
// is consumed; it is the decompressor's input.
type chanReader struct {
	src *reader
	// mu guards against a decompressor that reads on goroutines of its own.
	mu  sync.Mutex
	cur *buffer
	off int
}

func (r *chanReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.cur == nil || r.off == r.cur.n {
		if r.cur != nil {
			r.cur.release()
			r.cur = nil
		}
		b, ok := <-r.src.data
		if !ok {
			return 0, r.src.end()
		}
		r.cur, r.off = b, 0
	}
	n := copy(p, r.cur.bytes()[r.off:])
	r.off += n
	return n, nil
}

// drain hands back every buffer not read yet, until the source ends.
func (r *chanReader) drain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil {
		r.cur.release()
		r.cur = nil
	}
	for b := range r.src.data {
		b.release()
	}
}

// fill reads into buf until it is full or r fails. Unlike io.ReadFull it
// keeps a decoder's own io.ErrUnexpectedEOF (a truncated stream) apart from
// the plain end of the stream.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
