package images_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// diskImage returns n bytes that look like a disk: runs of zeros (which
// compress well) between blocks of random data (which do not), so every
// decoder sees both literal and repeated data across several buffers.
func diskImage(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for off := 0; off < n; off += 64 << 10 {
		end := min(off+64<<10, n)
		if r.IntN(3) == 0 {
			continue // a zero block
		}
		for i := off; i < end; i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < end; j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
	}
	return b
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func sha512Of(b []byte) string {
	s := sha512.Sum512(b)
	return "sha512:" + hex.EncodeToString(s[:])
}

// compressTool compresses raw with a real command-line tool (gzip, zstd, xz)
// so the decoders are checked against what operators actually produce.
func compressTool(t *testing.T, tool, pkg string, raw []byte, args ...string) []byte {
	t.Helper()
	path := pxetest.RequireTool(t, tool, pkg)
	cmd := exec.Command(path, append(args, "-c")...)
	cmd.Stdin = bytes.NewReader(raw)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v: %s", tool, err, stderr.String())
	}
	return out.Bytes()
}

// compressGo compresses raw with the Go libraries, the other producer the
// decoders must accept.
func compressGo(t testing.TB, format string, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch format {
	case images.FormatGz:
		w = gzip.NewWriter(&buf)
	case images.FormatZst:
		w, err = zstd.NewWriter(&buf)
	case images.FormatXz:
		w, err = xz.NewWriter(&buf)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// target returns a file to write an image to: a loop block device over a
// sparse file when the test may create one (root with losetup), else the
// file itself. The device is detached when the test ends.
func target(t *testing.T, size int) (path string, device bool) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, int64(size)); err != nil {
		t.Fatal(err)
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil || os.Geteuid() != 0 {
		return file, false
	}
	out, err := exec.Command(losetup, "--find", "--show", file).Output()
	if err != nil {
		t.Logf("no loop device (%v); writing to a plain file", err)
		return file, false
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, true
}

func TestWriteFormats(t *testing.T) {
	raw := diskImage(5<<20+12345, 1) // a full write buffer and a partial one
	type tc struct {
		format string
		src    []byte
	}
	cases := map[string]tc{
		"raw":       {images.FormatRaw, raw},
		"empty":     {"", raw},
		"gzip tool": {images.FormatGz, compressTool(t, "gzip", "gzip", raw, "-6")},
		"gzip go":   {images.FormatGz, compressGo(t, images.FormatGz, raw)},
		"zstd tool": {images.FormatZst, compressTool(t, "zstd", "zstd", raw, "-3", "-q")},
		"zstd go":   {images.FormatZst, compressGo(t, images.FormatZst, raw)},
		"xz tool":   {images.FormatXz, compressTool(t, "xz", "xz-utils", raw, "-1")},
		"xz go":     {images.FormatXz, compressGo(t, images.FormatXz, raw)},
		// Two concatenated gzip members, as `cat a.gz b.gz` makes, are one stream.
		"gzip multi": {images.FormatGz, append(compressTool(t, "gzip", "gzip", raw[:3<<20]), compressTool(t, "gzip", "gzip", raw[3<<20:])...)},
		// zstd's multithreaded mode writes independent frames.
		"zstd threads": {images.FormatZst, compressTool(t, "zstd", "zstd", raw, "-T2", "-q", "--zstd=windowLog=27")},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			for _, sum := range []string{sha256Of(c.src), sha512Of(c.src), ""} {
				var calls int
				var last uint64
				var buf bytes.Buffer
				n, err := images.Write(context.Background(), &buf, bytes.NewReader(c.src), images.WriteOptions{
					Format: c.format, Checksum: sum, Total: uint64(len(c.src)),
					Progress: func(done, total uint64) {
						if done < last || total != uint64(len(c.src)) {
							t.Errorf("progress went from %d to %d of %d", last, done, total)
						}
						last = done
						calls++
					},
				})
				if err != nil {
					t.Fatalf("checksum %q: %v", sum, err)
				}
				if n != int64(len(raw)) || !bytes.Equal(buf.Bytes(), raw) {
					t.Fatalf("wrote %d bytes (returned %d), want the %d bytes of the image", buf.Len(), n, len(raw))
				}
				if last != uint64(len(c.src)) || calls < 2 {
					t.Errorf("progress ended at %d after %d calls, want %d", last, calls, len(c.src))
				}
			}
		})
	}
}

func TestWriteToBlockDevice(t *testing.T) {
	raw := diskImage(8<<20, 2)
	zst := compressTool(t, "zstd", "zstd", raw, "-q")
	dev, isDev := target(t, len(raw))
	t.Logf("target %s (block device: %v)", dev, isDev)
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := images.Write(context.Background(), f, bytes.NewReader(zst), images.WriteOptions{Format: images.FormatZst, Checksum: sha256Of(zst)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(raw)) || !bytes.Equal(got[:len(raw)], raw) {
		t.Fatalf("device holds something else than the image (%d bytes written)", n)
	}
}

func TestWriteChecksumMismatch(t *testing.T) {
	raw := diskImage(5<<20, 3)
	zst := compressTool(t, "zstd", "zstd", raw, "-q")
	corrupt := func(b []byte) []byte {
		c := bytes.Clone(b)
		c[len(c)/2] ^= 0x55
		return c
	}
	cases := map[string]struct {
		format string
		src    []byte
		sum    string
	}{
		"raw, one byte flipped":       {images.FormatRaw, corrupt(raw), sha256Of(raw)},
		"zstd, one byte flipped":      {images.FormatZst, corrupt(zst), sha256Of(zst)},
		"zstd, truncated":             {images.FormatZst, zst[:len(zst)/2], sha256Of(zst)},
		"zstd, trailing garbage":      {images.FormatZst, append(bytes.Clone(zst), "garbage"...), sha256Of(zst)},
		"raw, sha512 of another file": {images.FormatRaw, raw, sha512Of(zst)},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := images.Write(context.Background(), io.Discard, bytes.NewReader(c.src), images.WriteOptions{Format: c.format, Checksum: c.sum})
			if !errors.Is(err, images.ErrChecksum) {
				t.Fatalf("err = %v, want a checksum mismatch", err)
			}
			got := sha256Of(c.src)
			if strings.HasPrefix(c.sum, "sha512:") {
				got = sha512Of(c.src)
			}
			if msg := err.Error(); !strings.Contains(msg, c.sum) || !strings.Contains(msg, got) {
				t.Errorf("error %q does not name both the expected %s and the actual %s", msg, c.sum, got)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	raw := diskImage(1<<20, 4)
	gz := compressTool(t, "gzip", "gzip", raw)
	// A byte of the image's data flipped: without a sum, only the frame's
	// own checksum tells.
	zst := compressTool(t, "zstd", "zstd", raw, "-q")
	zst[len(zst)/2] ^= 0x01
	cases := map[string]struct {
		format, sum string
		src         io.Reader
		want        string
	}{
		"unknown format":       {"bz2", "", bytes.NewReader(raw), "unknown image format"},
		"unsupported sum":      {"raw", "md5:00", bytes.NewReader(raw), "unsupported checksum"},
		"not gzip":             {"gz", "", bytes.NewReader(raw), "gzip"},
		"truncated, no sum":    {"gz", "", bytes.NewReader(gz[:len(gz)-100]), "decompress image"},
		"zstd flipped, no sum": {"zst", "", bytes.NewReader(zst), "decompress image"},
		"source fails midway":  {"raw", sha256Of(raw), io.MultiReader(bytes.NewReader(raw[:1000]), failingReader{}), "connection reset"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := images.Write(context.Background(), io.Discard, c.src, images.WriteOptions{Format: c.format, Checksum: c.sum})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, c.want)
			}
			if errors.Is(err, images.ErrChecksum) {
				t.Errorf("err = %v: not a checksum mismatch", err)
			}
		})
	}
}

func TestWriteCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := images.Write(ctx, io.Discard, bytes.NewReader(make([]byte, 1<<20)), images.WriteOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestWriteDestinationFails(t *testing.T) {
	raw := diskImage(9<<20, 5)
	_, err := images.Write(context.Background(), &limitedWriter{left: 5 << 20}, bytes.NewReader(raw), images.WriteOptions{Checksum: sha256Of(raw)})
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("err = %v, want the write error", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

type limitedWriter struct{ left int }

func (w *limitedWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, errors.New("no space left on device")
	}
	w.left -= len(p)
	return len(p), nil
}
