package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/metal-dev/metal/internal/atomicfile"
)

// FormatQcow2 is QEMU's copy-on-write disk format, as distributions publish
// their cloud images. metal never streams it to an agent: the cache
// converts it once, after checking the file as published, into a zstd
// stream of the raw disk with its own checksum (see Cache.Ensure).
const FormatQcow2 = "qcow2"

// qcow2Magic opens every qcow2 file: "QFI" and 0xfb.
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// ErrQcow2Refused marks a qcow2 image metal will not convert: one that
// names a backing file or an external data file (a path on the machine
// converting it, chosen by whoever made the image), or is encrypted.
var ErrQcow2Refused = errors.New("qcow2 image refused")

// maxQcow2Size bounds the virtual size of a qcow2 metal converts: the
// header is the image author's to choose, and the raw disk is written out
// (sparse) and compressed in full.
const maxQcow2Size = 16 << 40

// Qcow2Header is what metal reads of a qcow2 file's header before letting
// qemu-img open it.
type Qcow2Header struct {
	Version     uint32
	VirtualSize uint64
	// BackingFile is the backing file the image names ("" for none).
	BackingFile string
	// Encrypted is true when the image's clusters are encrypted.
	Encrypted bool
	// ExternalData is true when the image keeps its data in another file
	// (qcow2 v3's external data file).
	ExternalData bool
}

// IsQcow2 reports whether the file at p begins with qcow2's magic.
func IsQcow2(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [4]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil
		}
		return false, err
	}
	return bytes.Equal(b[:], qcow2Magic), nil
}

// ReadQcow2Header parses the header of the qcow2 image r (QEMU's
// docs/interop/qcow2.txt), without following anything it names.
func ReadQcow2Header(r io.ReaderAt) (Qcow2Header, error) {
	var b [104]byte
	n, err := r.ReadAt(b[:], 0)
	if n < 72 {
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("shorter than a qcow2 header")
		}
		return Qcow2Header{}, fmt.Errorf("read qcow2 header: %w", err)
	}
	if !bytes.Equal(b[:4], qcow2Magic) {
		return Qcow2Header{}, errors.New("not a qcow2 image (no QFI\\xfb magic)")
	}
	be := binary.BigEndian
	h := Qcow2Header{
		Version:     be.Uint32(b[4:8]),
		VirtualSize: be.Uint64(b[24:32]),
		Encrypted:   be.Uint32(b[32:36]) != 0,
	}
	if h.Version != 2 && h.Version != 3 {
		return h, fmt.Errorf("qcow2 version %d: metal reads versions 2 and 3", h.Version)
	}
	if h.Version == 3 {
		if n < 104 {
			return h, errors.New("read qcow2 header: shorter than a version 3 header")
		}
		// Incompatible feature bit 2: the data is in an external file.
		h.ExternalData = be.Uint64(b[72:80])&(1<<2) != 0
	}
	if off, size := be.Uint64(b[8:16]), be.Uint32(b[16:20]); off != 0 {
		if size == 0 || size > 1023 {
			h.BackingFile = "(unreadable name)"
		} else {
			name := make([]byte, size)
			if _, err := r.ReadAt(name, int64(off)); err != nil {
				h.BackingFile = "(unreadable name)"
			} else {
				h.BackingFile = strings.ToValidUTF8(string(name), "?")
			}
		}
	}
	return h, nil
}

// checkConvertible says why metal refuses to convert a qcow2 with header h.
func (h Qcow2Header) checkConvertible() error {
	switch {
	case h.BackingFile != "":
		return fmt.Errorf("%w: it has a backing file (%q), so it is only the changes to another image; publish a standalone image (qemu-img convert -O qcow2 flattens it)", ErrQcow2Refused, h.BackingFile)
	case h.ExternalData:
		return fmt.Errorf("%w: its data is in an external data file; publish a standalone image (qemu-img convert -O qcow2)", ErrQcow2Refused)
	case h.Encrypted:
		return fmt.Errorf("%w: it is encrypted", ErrQcow2Refused)
	case h.VirtualSize == 0:
		return fmt.Errorf("%w: its disk is empty (virtual size 0)", ErrQcow2Refused)
	case h.VirtualSize > maxQcow2Size:
		return fmt.Errorf("%w: its disk is %d bytes, more than metal converts (%d)", ErrQcow2Refused, h.VirtualSize, uint64(maxQcow2Size))
	}
	return nil
}

// conversion records what a qcow2 blob was converted into.
type conversion struct {
	From   string `json:"from"`   // the qcow2 as published
	To     string `json:"to"`     // the zstd stream of its raw disk
	Format string `json:"format"` // FormatZst
	Size   int64  `json:"size"`   // the raw disk's bytes
}

func (c *Cache) conversionPath(d Digest) string {
	return filepath.Join(c.dir, convertedDir, d.Alg+"-"+d.Hex+".json")
}

// readConversion returns the recorded conversion of the qcow2 blob d,
// without checking the blob it names.
func (c *Cache) readConversion(d Digest) (conversion, Digest, bool) {
	b, err := os.ReadFile(c.conversionPath(d))
	if err != nil {
		return conversion{}, Digest{}, false
	}
	var cv conversion
	if json.Unmarshal(b, &cv) != nil || cv.From != d.String() {
		return conversion{}, Digest{}, false
	}
	to, err := ParseChecksum(cv.To)
	if err != nil {
		return conversion{}, Digest{}, false
	}
	return cv, to, true
}

// converted returns the verified conversion of the qcow2 blob d, if the
// cache holds one.
func (c *Cache) converted(d Digest) (conversion, bool, error) {
	cv, to, ok := c.readConversion(d)
	if !ok {
		return conversion{}, false, nil
	}
	unlock := c.lock(to.String())
	ok, err := c.checkBlob(to)
	unlock()
	return cv, ok, err
}

// convertQcow2 converts the verified qcow2 blob d into a zstd stream of its
// raw disk, stored under its own sha256, and records the conversion. The
// header is checked first: qemu-img is told the format (-f qcow2, never
// probed) and only ever opens an image that names no other file.
func (c *Cache) convertQcow2(ctx context.Context, d Digest) (conversion, error) {
	blob := c.BlobPath(d)
	f, err := os.Open(blob)
	if err != nil {
		return conversion{}, err
	}
	h, err := ReadQcow2Header(f)
	f.Close()
	if err != nil {
		return conversion{}, err
	}
	if err := h.checkConvertible(); err != nil {
		return conversion{}, err
	}
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		return conversion{}, errors.New("converting a qcow2 image needs qemu-img (Debian package qemu-utils) on the machine that fetches it")
	}
	work, err := os.MkdirTemp(filepath.Join(c.dir, partialDir), "qcow2-")
	if err != nil {
		return conversion{}, err
	}
	defer os.RemoveAll(work)
	raw := filepath.Join(work, "disk.raw")
	// -f qcow2: the format is not guessed; -S 64k keeps zeros as holes.
	cmd := exec.CommandContext(ctx, qemuImg, "convert", "-f", "qcow2", "-O", "raw", "-S", "64k", blob, raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return conversion{}, ctx.Err()
		}
		return conversion{}, fmt.Errorf("qemu-img convert: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	in, err := os.Open(raw)
	if err != nil {
		return conversion{}, err
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(work, "disk.raw.zst"))
	if err != nil {
		return conversion{}, err
	}
	defer out.Close()
	h256 := sha256.New()
	zw, err := zstd.NewWriter(io.MultiWriter(out, h256), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return conversion{}, err
	}
	size, err := io.CopyBuffer(zw, &ctxReader{ctx: ctx, r: in}, make([]byte, 1<<20))
	if err == nil {
		err = zw.Close()
	} else {
		zw.Close()
	}
	if err != nil {
		return conversion{}, fmt.Errorf("compress converted qcow2: %w", err)
	}
	if err := out.Sync(); err != nil {
		return conversion{}, err
	}
	if err := out.Chmod(0o444); err != nil {
		return conversion{}, err
	}
	to := Digest{Alg: "sha256", Hex: hex.EncodeToString(h256.Sum(nil))}
	unlock := c.lock(to.String())
	err = os.Rename(out.Name(), c.BlobPath(to))
	if err == nil {
		syncDir(filepath.Dir(c.BlobPath(to)))
		if fi, err := os.Stat(c.BlobPath(to)); err == nil {
			c.mu.Lock()
			c.hashed[c.BlobPath(to)] = stampOf(fi)
			c.mu.Unlock()
		}
	}
	unlock()
	if err != nil {
		return conversion{}, err
	}
	cv := conversion{From: d.String(), To: to.String(), Format: FormatZst, Size: size}
	b, err := json.Marshal(cv)
	if err != nil {
		return conversion{}, err
	}
	if err := atomicfile.Write(c.conversionPath(d), b, 0o600); err != nil {
		return conversion{}, err
	}
	c.log.Info("qcow2 image converted", "from", d.String(), "to", cv.To, "disk_bytes", size)
	return cv, nil
}
