package images_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/internal/testenv"
)

// bufSize is the pipeline's buffer (images/pipeline.go): the sizes below
// sit on either side of its multiples and of the 4096-byte alignment of
// direct writes.
const bufSize = 4 << 20

// destination is where a test writes an image: a real file, device or pipe.
type destination struct {
	name string
	// open returns the file to write to and a function that returns what it
	// holds after the write (from offset 0).
	open func(t *testing.T, size int) (*os.File, func() []byte)
}

// fileDest is a regular file on the test's temporary directory (ext4 here:
// Write uses O_DIRECT).
func fileDest(dir func(t *testing.T) string) func(t *testing.T, size int) (*os.File, func() []byte) {
	return func(t *testing.T, size int) (*os.File, func() []byte) {
		path := filepath.Join(dir(t), "disk.img")
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f, func() []byte { return readAll(t, path) }
	}
}

// shmDir is a directory on tmpfs, a file system with its own (or no)
// direct I/O.
func shmDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "metal-images-")
	if err != nil {
		t.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// loopDest is a loop block device over a file of the image's size rounded
// up to 4096 bytes, as disks are, with 512-byte sectors.
func loopDest(t *testing.T, size int) (*os.File, func() []byte) {
	return openLoop(t, loopDevice(t, (size+4095)&^4095+4096))
}

// loop4KnDest is a loop device with 4096-byte logical sectors, as "4Kn"
// disks have: direct writes must be multiples of 4096.
func loop4KnDest(t *testing.T, size int) (*os.File, func() []byte) {
	return openLoop(t, loopDevice(t, (size+4095)&^4095+4096, "--sector-size", "4096"))
}

func openLoop(t *testing.T, dev string) (*os.File, func() []byte) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, func() []byte { return readAll(t, dev) }
}

// pipeDest is a pipe read by a goroutine: a destination that is neither a
// file nor a block device, written through plain writes.
func pipeDest(t *testing.T, _ int) (*os.File, func() []byte) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(&buf, r)
		r.Close()
	}()
	t.Cleanup(func() { w.Close(); <-done })
	return w, func() []byte {
		w.Close()
		<-done
		return buf.Bytes()
	}
}

// loopDevice attaches a loop device over a sparse file of size bytes and
// detaches it when the test ends; the test is skipped where it cannot.
func loopDevice(t *testing.T, size int, args ...string) string {
	t.Helper()
	testenv.Root(t, "loop devices")
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("loop devices need losetup (util-linux)")
	}
	file := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, int64(size)); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, append(args, "--find", "--show", file)...).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func statusFlags(t *testing.T, f *os.File) int {
	t.Helper()
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return flags
}

func offset(t *testing.T, f *os.File) int64 {
	t.Helper()
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// chunkyReader returns at most n bytes a read, so buffers are filled by
// several reads that do not line up with them, as a network body does.
type chunkyReader struct {
	r io.Reader
	n int
}

func (c chunkyReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

var destinations = []destination{
	{"file", fileDest(func(t *testing.T) string { return t.TempDir() })},
	{"tmpfs file", fileDest(shmDir)},
	{"loop device", loopDest},
	{"4Kn loop device", loop4KnDest},
	{"pipe", pipeDest},
}

// TestWriteBufferBoundaries writes images of sizes around the buffer size
// and the direct-I/O block to each kind of destination, and checks the
// bytes, the count, the file's offset and flags after, and the checksum.
func TestWriteBufferBoundaries(t *testing.T) {
	sizes := []int{0, 1, 4095, 4096, 4097, bufSize - 1, bufSize, bufSize + 1, 2*bufSize + 4096, 3*bufSize + 517}
	image := diskImage(3*bufSize+517, 11)
	// Each size is compressed once, for every destination.
	compressed := map[int][]byte{}
	for _, size := range sizes {
		compressed[size] = compressGo(t, images.FormatZst, image[:size])
	}
	for _, d := range destinations {
		for _, format := range []string{images.FormatRaw, images.FormatZst} {
			for _, size := range sizes {
				t.Run(fmt.Sprintf("%s/%s/%d", d.name, format, size), func(t *testing.T) {
					raw := image[:size]
					src := raw
					if format != images.FormatRaw {
						src = compressed[size]
					}
					f, contents := d.open(t, size)
					regular := d.name != "pipe"
					var flags int
					if regular {
						flags = statusFlags(t, f)
					}
					n, err := images.Write(context.Background(), f, chunkyReader{bytes.NewReader(src), 100_003}, images.WriteOptions{
						Format: format, Checksum: sha256Of(src),
					})
					if err != nil {
						t.Fatal(err)
					}
					if n != int64(size) {
						t.Errorf("Write returned %d, want %d", n, size)
					}
					if regular {
						if got := offset(t, f); got != int64(size) {
							t.Errorf("file offset after Write = %d, want %d", got, size)
						}
						if got := statusFlags(t, f); got != flags {
							t.Errorf("file flags after Write = %#o, want %#o as before", got, flags)
						}
					}
					got := contents()
					if len(got) < size || !bytes.Equal(got[:size], raw) {
						t.Fatalf("destination holds %d bytes that differ from the %d of the image", len(got), size)
					}
				})
			}
		}
	}
}

// TestWriteAtOffset starts writing where the file's offset already is:
// aligned (direct writes) or not (the page cache), as a caller that wrote a
// header first would.
func TestWriteAtOffset(t *testing.T) {
	raw := diskImage(bufSize+8191, 12)
	for _, start := range []int64{4096, 100, bufSize} {
		t.Run(fmt.Sprint(start), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			head := bytes.Repeat([]byte{0xa5}, int(start))
			if _, err := f.Write(head); err != nil {
				t.Fatal(err)
			}
			n, err := images.Write(context.Background(), f, bytes.NewReader(raw), images.WriteOptions{Checksum: sha512Of(raw)})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := offset(t, f), start+n; got != want || n != int64(len(raw)) {
				t.Errorf("wrote %d bytes, offset %d; want %d and %d", n, got, len(raw), want)
			}
			if got := readAll(t, path); !bytes.Equal(got, append(head, raw...)) {
				t.Errorf("file holds %d bytes that are not the header and then the image", len(got))
			}
		})
	}
}

// failAfter returns src's bytes up to n, then a network error.
type failAfter struct {
	r    io.Reader
	left int
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.left == 0 {
		return 0, errors.New("connection reset by peer")
	}
	n, err := f.r.Read(p[:min(len(p), f.left)])
	f.left -= n
	return n, err
}

// TestWriteSourceFailsMidStream cuts the source at and around buffer
// boundaries: the error is the source's, not a checksum mismatch, and
// nothing past what was read is written.
func TestWriteSourceFailsMidStream(t *testing.T) {
	raw := diskImage(3*bufSize, 13)
	gz := compressTool(t, "gzip", "gzip", raw)
	for _, format := range []string{images.FormatRaw, images.FormatGz} {
		src := raw
		if format == images.FormatGz {
			src = gz
		}
		for _, at := range []int{0, 1, bufSize - 1, bufSize, bufSize + 1, 2*bufSize + 3} {
			if at >= len(src) {
				continue // the compressed image is shorter
			}
			t.Run(fmt.Sprintf("%s/%d", format, at), func(t *testing.T) {
				f, contents := fileDest(func(t *testing.T) string { return t.TempDir() })(t, len(raw))
				flags := statusFlags(t, f)
				n, err := images.Write(context.Background(), f, &failAfter{r: bytes.NewReader(src), left: at}, images.WriteOptions{
					Format: format, Checksum: sha256Of(src),
				})
				if err == nil || !strings.Contains(err.Error(), "read image: connection reset by peer") {
					t.Fatalf("err = %v, want the source's error", err)
				}
				if errors.Is(err, images.ErrChecksum) {
					t.Errorf("err = %v: not a checksum mismatch", err)
				}
				if format == images.FormatRaw && n > int64(at) {
					t.Errorf("wrote %d bytes of a source cut at %d", n, at)
				}
				if got := contents(); !bytes.Equal(got, raw[:len(got)]) || int64(len(got)) < n {
					t.Errorf("file holds %d bytes, not the first %d of the image", len(got), n)
				}
				if got := statusFlags(t, f); got != flags {
					t.Errorf("file flags after Write = %#o, want %#o as before", got, flags)
				}
			})
		}
	}
}

// TestWriteTruncatedSource ends the source early, cleanly: with a checksum
// that is a mismatch naming both sums; without one a compressed image is
// still a decoder error.
func TestWriteTruncatedSource(t *testing.T) {
	raw := diskImage(2*bufSize+100, 14)
	zst := compressTool(t, "zstd", "zstd", raw, "-q")
	cases := map[string]struct {
		format  string
		src     []byte
		cut     int
		sum     bool
		wantErr string
	}{
		"raw at a buffer":        {images.FormatRaw, raw, bufSize, true, "checksum mismatch"},
		"raw inside a buffer":    {images.FormatRaw, raw, bufSize + 4097, true, "checksum mismatch"},
		"zst in its last block":  {images.FormatZst, zst, len(zst) - 10, true, "checksum mismatch"},
		"zst half":               {images.FormatZst, zst, len(zst) / 2, true, "checksum mismatch"},
		"zst half, no checksum":  {images.FormatZst, zst, len(zst) / 2, false, "decompress image"},
		"zst first byte, no sum": {images.FormatZst, zst, 1, false, "decompress image"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var sum string
			if c.sum {
				sum = sha256Of(c.src)
			}
			f, _ := fileDest(func(t *testing.T) string { return t.TempDir() })(t, len(raw))
			_, err := images.Write(context.Background(), f, bytes.NewReader(c.src[:c.cut]), images.WriteOptions{Format: c.format, Checksum: sum})
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
			if c.sum {
				if !errors.Is(err, images.ErrChecksum) || !strings.Contains(err.Error(), sum) || !strings.Contains(err.Error(), sha256Of(c.src[:c.cut])) {
					t.Errorf("err = %v, want a checksum mismatch naming %s and %s", err, sum, sha256Of(c.src[:c.cut]))
				}
			}
		})
	}
}

// TestWriteMismatchOnDisk writes a corrupted image to a loop device: the
// bytes land (they stream), Write reports the mismatch with both sums.
func TestWriteMismatchOnDisk(t *testing.T) {
	raw := diskImage(2*bufSize+12345, 15)
	zst := compressTool(t, "zstd", "zstd", raw, "-q")
	for name, src := range map[string][]byte{images.FormatRaw: raw, images.FormatZst: zst} {
		t.Run(name, func(t *testing.T) {
			bad := bytes.Clone(src)
			bad[len(bad)-1000] ^= 0x01
			f, _ := loopDest(t, len(raw))
			_, err := images.Write(context.Background(), f, bytes.NewReader(bad), images.WriteOptions{Format: name, Checksum: sha256Of(src)})
			if !errors.Is(err, images.ErrChecksum) {
				t.Fatalf("err = %v, want a checksum mismatch", err)
			}
			if msg := err.Error(); !strings.Contains(msg, sha256Of(src)) || !strings.Contains(msg, sha256Of(bad)) {
				t.Errorf("error %q does not name both %s and %s", msg, sha256Of(src), sha256Of(bad))
			}
		})
	}
}

// TestWriteDiskFull writes an image larger than the loop device: the
// device's error, with the bytes that fit written.
func TestWriteDiskFull(t *testing.T) {
	raw := diskImage(2*bufSize+4096, 16)
	dev := loopDevice(t, bufSize+8192)
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := images.Write(context.Background(), f, bytes.NewReader(raw), images.WriteOptions{Checksum: sha256Of(raw)})
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("err = %v, want the device's ENOSPC", err)
	}
	if n > bufSize+8192 {
		t.Errorf("Write returned %d bytes written to a device of %d", n, bufSize+8192)
	}
	if got := readAll(t, dev); !bytes.Equal(got[:n], raw[:n]) {
		t.Errorf("device holds something else than the first %d bytes of the image", n)
	}
}

// endless is a source that never ends; it counts what was read and calls
// at once when the count passes a mark.
type endless struct {
	read atomic.Int64
	mark int64
	at   func()
	once sync.Once
}

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i)
	}
	if e.read.Add(int64(len(p))) >= e.mark {
		e.once.Do(e.at)
	}
	return len(p), nil
}

// blockingBody blocks each read until ctx is done, as an HTTP response
// body of a stalled server does with the request's context.
type blockingBody struct{ ctx context.Context }

func (b blockingBody) Read([]byte) (int, error) {
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

// cancelWriter cancels the context at its nth write.
type cancelWriter struct {
	n      int
	cancel context.CancelFunc
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	if w.n--; w.n == 0 {
		w.cancel()
	}
	return len(p), nil
}

// cancelCase runs one Write that cancels ctx (through cancel) midway.
type cancelCase struct {
	run func(ctx context.Context, cancel context.CancelFunc, f *os.File) (int64, error)
	// extra is how many source bytes were read after the cancel; nil when
	// the case does not count them.
	extra func() int64
}

// TestWriteCancelMidStream cancels while the image streams: Write returns
// context.Canceled, and reads of the source stop within the buffers
// already in flight rather than running on.
func TestWriteCancelMidStream(t *testing.T) {
	// The reader may have every source buffer filled and one more being
	// filled when the cancel comes; nothing beyond.
	const inFlight = 6 * bufSize
	cases := map[string]cancelCase{}
	for _, format := range []string{images.FormatRaw, images.FormatZst} {
		src := &endless{mark: 3*bufSize + 17}
		c := cancelCase{run: func(ctx context.Context, cancel context.CancelFunc, f *os.File) (int64, error) {
			src.at = cancel
			var in io.Reader = src
			if format == images.FormatZst {
				in = zstdStream(t, src)
			}
			return images.Write(ctx, f, in, images.WriteOptions{Format: format, Checksum: "sha256:00"})
		}}
		if format == images.FormatRaw {
			// The zstd encoder between reads ahead on its own.
			c.extra = func() int64 { return src.read.Load() - src.mark }
		}
		cases["source cancels/"+format] = c
	}
	writerSrc := &endless{mark: 1 << 62}
	cases["writer cancels"] = cancelCase{
		run: func(ctx context.Context, cancel context.CancelFunc, _ *os.File) (int64, error) {
			return images.Write(ctx, &cancelWriter{n: 2, cancel: cancel}, writerSrc, images.WriteOptions{})
		},
		extra: func() int64 { return writerSrc.read.Load() - 2*bufSize },
	}
	cases["stalled source"] = cancelCase{
		run: func(ctx context.Context, cancel context.CancelFunc, f *os.File) (int64, error) {
			go cancel()
			return images.Write(ctx, f, blockingBody{ctx}, images.WriteOptions{Format: images.FormatGz})
		},
	}

	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f, _ := fileDest(func(t *testing.T) string { return t.TempDir() })(t, 0)
			flags := statusFlags(t, f)
			_, err := c.run(ctx, cancel, f)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if c.extra != nil {
				if extra := c.extra(); extra > inFlight {
					t.Errorf("read %d bytes of the source after the cancel, want at most %d", extra, inFlight)
				}
			}
			if got := statusFlags(t, f); got != flags {
				t.Errorf("file flags after Write = %#o, want %#o as before", got, flags)
			}
		})
	}
}

// zstdStream compresses an endless source on the fly, so the decoder is
// mid-stream when the cancel comes.
func zstdStream(t *testing.T, src io.Reader) io.Reader {
	t.Helper()
	pr, pw := io.Pipe()
	zw, err := zstd.NewWriter(pw)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := io.Copy(zw, src)
		zw.Close()
		pw.CloseWithError(err)
	}()
	t.Cleanup(func() { pr.Close() })
	return pr
}

// TestWriteProgressOnFile checks progress on the direct-I/O path: it only
// grows, ends at the source's size, and is called as the image streams.
func TestWriteProgressOnFile(t *testing.T) {
	raw := diskImage(3*bufSize+1, 17)
	f, _ := fileDest(func(t *testing.T) string { return t.TempDir() })(t, len(raw))
	var calls []uint64
	_, err := images.Write(context.Background(), f, bytes.NewReader(raw), images.WriteOptions{
		Checksum: sha256Of(raw), Total: uint64(len(raw)),
		Progress: func(done, total uint64) {
			if total != uint64(len(raw)) {
				t.Errorf("progress total %d, want %d", total, len(raw))
			}
			calls = append(calls, done)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []uint64{bufSize, 2 * bufSize, 3 * bufSize, 3*bufSize + 1}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("progress calls (-want +got):\n%s", diff)
	}
}
