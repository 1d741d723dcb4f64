package images

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

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
	// every few MiB and once at the end, from one goroutine at a time (not
	// necessarily the caller's).
	Progress func(done, total uint64)
}

// Write streams src to dst, decompressing by opts.Format and hashing the
// bytes of src as read. On a checksum mismatch it returns an error wrapping
// ErrChecksum that names both sums; a stream that does not decompress is
// still hashed to its end, so a corrupted image is reported as a checksum
// mismatch rather than only a decoder error. It returns the bytes written to
// dst. dst may have been partly written when an error is returned.
//
// Reading, hashing, decompressing and writing run on their own goroutines
// over a few large buffers, so on a machine with two cores the hash costs
// little wall time beside the write (see pipeline.go). When dst is an
// *os.File on a file system or block device that allows it, Write writes
// with O_DIRECT: the image goes from its buffers to the disk without a copy
// into the page cache, and it flushes the disk's write cache in the
// background as the image streams, so the caller's fsync has little left to
// wait for.
// The file's flags are as before when Write returns, and its offset is
// after the bytes written.
func Write(ctx context.Context, dst io.Writer, src io.Reader, opts WriteOptions) (int64, error) {
	h, want, err := Hasher(opts.Checksum)
	if err != nil {
		return 0, err
	}
	dec, err := decoderFor(opts.Format, h != nil)
	if err != nil {
		return 0, err
	}
	out := newDiskWriter(dst)
	res := run(ctx, out, src, h, dec, opts)
	if err := out.restore(); err != nil && res.writeErr == nil {
		res.writeErr = err
	}
	if opts.Progress != nil {
		opts.Progress(res.read, opts.Total)
	}
	switch {
	case ctx.Err() != nil:
		return res.written, ctx.Err()
	case res.writeErr != nil:
		return res.written, fmt.Errorf("write image: %w", res.writeErr)
	case res.srcErr != nil:
		return res.written, fmt.Errorf("%w: %w", errSource, res.srcErr)
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			alg := opts.Checksum[:len(opts.Checksum)-len(want)]
			sumErr := fmt.Errorf("%w: expected %s, the image read has %s%s", ErrChecksum, opts.Checksum, alg, got)
			if res.decErr != nil {
				return res.written, fmt.Errorf("%w (and it did not decompress: %v)", sumErr, res.decErr)
			}
			return res.written, sumErr
		}
	}
	if res.decErr != nil {
		return res.written, fmt.Errorf("%w: %w", errDecode, res.decErr)
	}
	return res.written, nil
}

// errDecode marks an error of the decompressor, as opposed to one of reading
// src (errSource) or writing dst.
var errDecode = errors.New("decompress image")

// errSource marks an error reading the source stream itself.
var errSource = errors.New("read image")

// decoder opens the decompressing reader of one format over the compressed
// stream; close releases it (and waits for its goroutines).
type decoder func(r io.Reader) (rd io.Reader, close func(), err error)

// decoderFor returns the decoder of format, nil for a raw image. verified
// says the compressed stream is hashed and checked as it is read.
func decoderFor(format string, verified bool) (decoder, error) {
	switch format {
	case "", FormatRaw:
		return nil, nil
	case FormatGz:
		return func(r io.Reader) (io.Reader, func(), error) {
			// flate reads bit by bit; through a bufio.Reader it takes its
			// fast path.
			zr, err := gzip.NewReader(bufio.NewReaderSize(r, 1<<20))
			if err != nil {
				return nil, nil, fmt.Errorf("gzip: %w", err)
			}
			return zr, func() { zr.Close() }, nil
		}, nil
	case FormatZst:
		return func(r io.Reader) (io.Reader, func(), error) {
			// One decoding goroutine: the pipeline already decodes beside
			// the hash and the disk writes, and the decoder's concurrent
			// mode cost more CPU for no gain in time here (2 vCPUs: about
			// 1.4x the CPU on an image half zeros, whose RLE blocks it
			// fills a byte at a time, and 1.2x on packed binaries).
			//
			// Not low-memory: in that mode the history buffer is the
			// window and half a block, so the decoder moves the whole
			// window down every half block; at twice the window (this
			// mode) it moves it once a window.
			//
			// The frame's xxhash64 is not checked when the compressed
			// stream is: its digest, checked as it is read, already proves
			// every byte is the catalog's, and checking both costs the
			// decoding stage, which sets the pipeline's pace.
			zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(false),
				zstd.IgnoreChecksum(verified), zstd.WithDecoderMaxWindow(1<<31))
			if err != nil {
				return nil, nil, fmt.Errorf("zstd: %w", err)
			}
			return zr, zr.Close, nil
		}, nil
	case FormatXz:
		return func(r io.Reader) (io.Reader, func(), error) {
			xr, err := xz.NewReader(bufio.NewReaderSize(r, 1<<20))
			if err != nil {
				return nil, nil, fmt.Errorf("xz: %w", err)
			}
			return xr, func() {}, nil
		}, nil
	case FormatQcow2:
		return nil, errors.New("a qcow2 image is not streamed: metal's image cache converts it and serves the result as zst")
	}
	return nil, fmt.Errorf("unknown image format %q: use raw, gz, zst or xz", format)
}
