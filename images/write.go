package images

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrChecksum means a file's content does not match its declared checksum;
// such a file is never served or trusted.
var ErrChecksum = errors.New("checksum mismatch")

// Disk image formats (site.Image.Format).
const (
	FormatRaw = "raw"
	FormatGz  = "gz"
	FormatZst = "zst"
	FormatXz  = "xz"
)

// WriteOptions says how to read the source stream of Write.
type WriteOptions struct {
	// Format is the compression of src: raw, gz, zst or xz ("" is raw).
	Format string
	// Checksum is the expected digest of src as read (the compressed bytes):
	// "sha256:<hex>", "sha512:<hex>" or "" for none.
	Checksum string
	// Total is the size of src in bytes, 0 when unknown; it is only passed on
	// to Progress.
	Total uint64
	// Progress, when set, is called with the bytes of src read so far,
	// every few MiB and once at the end.
	Progress func(done, total uint64)
}

// writeBufSize is the size of each write to dst. Block devices and files
// take large sequential writes best; 4 MiB is what dd users pick (bs=4M)
// and keeps the per-call overhead negligible.
const writeBufSize = 4 << 20

// progressEvery is how many bytes of src pass between progress calls.
const progressEvery = 1 << 20

// writeBufs is how many buffers are in flight: one being filled
// (read, hashed, decompressed) while the others are written, so the network
// or decompressor and the disk work at the same time.
const writeBufs = 3

// Write streams src to dst, decompressing by opts.Format and hashing the
// bytes of src as read. On a checksum mismatch it returns an error wrapping
// ErrChecksum that names both sums; a stream that does not decompress is
// still hashed to its end, so a corrupted image is reported as a checksum
// mismatch rather than only a decoder error. It returns the bytes written to
// dst. dst may have been partly written when an error is returned.
func Write(ctx context.Context, dst io.Writer, src io.Reader, opts WriteOptions) (int64, error) {
	h, want, err := Hasher(opts.Checksum)
	if err != nil {
		return 0, err
	}
	in := &hashingReader{ctx: ctx, r: src, h: h, total: opts.Total, progress: opts.Progress}
	dec, closeDec, err := decompressor(opts.Format, in)
	if err != nil {
		return 0, err
	}
	defer closeDec()

	written, copyErr := pipeline(ctx, dst, dec)
	var srcErr error
	if copyErr == nil || errors.Is(copyErr, errDecode) {
		// The decompressor may stop before the end of src (trailing padding,
		// or it failed): hash the rest so the checksum covers every byte.
		_, srcErr = io.Copy(io.Discard, in)
	}
	if in.progress != nil {
		in.progress(in.done, in.total)
	}
	if h != nil && srcErr == nil && (copyErr == nil || errors.Is(copyErr, errDecode)) {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			alg := opts.Checksum[:len(opts.Checksum)-len(want)]
			sumErr := fmt.Errorf("%w: expected %s, the image read has %s%s", ErrChecksum, opts.Checksum, alg, got)
			if copyErr != nil {
				return written, fmt.Errorf("%w (and it did not decompress: %v)", sumErr, copyErr)
			}
			return written, sumErr
		}
	}
	if copyErr != nil {
		return written, copyErr
	}
	if srcErr != nil {
		return written, srcErr
	}
	return written, nil
}

// errDecode marks an error of the decompressor, as opposed to one of reading
// src (which the hashingReader reports with errSource) or writing dst.
var errDecode = errors.New("decompress image")

// errSource marks an error reading the source stream itself.
var errSource = errors.New("read image")

// pipeline copies r to w in large buffers, reading the next buffer while the
// previous one is being written.
func pipeline(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	full := make(chan []byte, writeBufs-1)
	free := make(chan []byte, writeBufs)
	for range writeBufs {
		free <- make([]byte, writeBufSize)
	}
	writeErr := make(chan error, 1)
	var written int64
	go func() {
		defer func() {
			if p := recover(); p != nil {
				writeErr <- fmt.Errorf("write image: panic: %v", p)
				for range full {
				}
			}
		}()
		var err error
		for buf := range full {
			if err == nil {
				var n int
				n, err = w.Write(buf)
				written += int64(n)
				if err == nil && n < len(buf) {
					err = io.ErrShortWrite
				}
				if err != nil {
					err = fmt.Errorf("write image: %w", err)
				}
			}
			free <- buf[:cap(buf)]
		}
		writeErr <- err
	}()

	var readErr error
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			readErr = ctx.Err()
		}
		if readErr != nil {
			break
		}
		n, err := fill(r, buf)
		if n > 0 {
			full <- buf[:n]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	close(full)
	werr := <-writeErr
	switch {
	case readErr != nil && (errors.Is(readErr, errSource) || errors.Is(readErr, context.Canceled) || errors.Is(readErr, context.DeadlineExceeded)):
		return written, readErr
	case readErr != nil:
		return written, fmt.Errorf("%w: %w", errDecode, readErr)
	}
	return written, werr
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

// decompressor wraps r in the reader for format. Readers are buffered so the
// decoders get large reads from a network stream.
func decompressor(format string, r io.Reader) (io.Reader, func(), error) {
	nop := func() {}
	switch format {
	case "", FormatRaw:
		return r, nop, nil
	case FormatGz:
		zr, err := gzip.NewReader(bufio.NewReaderSize(r, 1<<20))
		if err != nil {
			if errors.Is(err, errSource) {
				return nil, nop, err
			}
			return nil, nop, fmt.Errorf("%w: gzip: %w", errDecode, err)
		}
		return zr, func() { zr.Close() }, nil
	case FormatZst:
		// zstd decodes blocks concurrently; more than the CPUs buys nothing.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(min(4, runtime.NumCPU())), zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			return nil, nop, fmt.Errorf("%w: zstd: %w", errDecode, err)
		}
		return zr, zr.Close, nil
	case FormatXz:
		xr, err := xz.NewReader(bufio.NewReaderSize(r, 1<<20))
		if err != nil {
			if errors.Is(err, errSource) {
				return nil, nop, err
			}
			return nil, nop, fmt.Errorf("%w: xz: %w", errDecode, err)
		}
		return xr, nop, nil
	}
	return nil, nop, fmt.Errorf("unknown image format %q: use raw, gz, zst or xz", format)
}

// hashingReader hashes and counts what is read from r, checks the context
// between reads and reports progress.
type hashingReader struct {
	ctx      context.Context
	r        io.Reader
	h        hash.Hash
	done     uint64
	reported uint64
	total    uint64
	progress func(done, total uint64)
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	if err := hr.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := hr.r.Read(p)
	if n > 0 {
		if hr.h != nil {
			hr.h.Write(p[:n])
		}
		hr.done += uint64(n)
		if hr.progress != nil && hr.done-hr.reported >= progressEvery {
			hr.reported = hr.done
			hr.progress(hr.done, hr.total)
		}
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", errSource, err)
	}
	return n, err
}
