package images

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metal-dev/metal/images/source"
	"github.com/metal-dev/metal/internal/atomicfile"
)

// The cache's layout under its directory (STATE/images):
//
//	sha256/HEX, sha512/HEX   verified content, named by its digest (0444)
//	partial/ALG-HEX          downloads in progress, resumed where they stopped
//	local/KEY.json           digests of local files the site gives no checksum
//	converted/ALG-HEX.json   what a qcow2 blob was converted into (a raw
//	                         disk as zstd, itself a blob under sha256/)
//	serve/IMAGE/NAME         hard links to blobs: the tree served at /images/
//
// Nothing reaches sha256/, sha512/ or serve/ before its digest is checked,
// so a partial, corrupt or mismatched file is never served.
const (
	partialDir   = "partial"
	localDir     = "local"
	convertedDir = "converted"
	serveDir     = "serve"
)

// Options configure a Cache.
type Options struct {
	// Fetcher opens sources (default: a zero source.Fetcher rooted at
	// SiteDir). The cache does not close it.
	Fetcher *source.Fetcher
	// SiteDir is where relative paths of the site start.
	SiteDir string
	Logger  *slog.Logger
	// Progress, when set, is told how a download advances: bytes done of
	// total (-1 unknown), every MiB or so and when it ends.
	Progress func(f File, done, total int64)
	// Retries is how many times a download that fails without making
	// progress is tried again: 0 means 4, a negative number none. One that
	// made progress always resumes.
	Retries int
	// RetryWait is the pause before the first retry, doubled for each
	// following one (default 1s).
	RetryWait time.Duration
}

// Cache is the content-addressed store of image files in the state
// directory.
type Cache struct {
	dir   string
	opts  Options
	fetch *source.Fetcher
	log   *slog.Logger

	mu sync.Mutex
	// hashed remembers blobs this process has hashed, by their file's
	// identity, so each is verified once before first use, not on every use.
	hashed map[string]fileStamp
	locks  map[string]*sync.Mutex
}

// fileStamp identifies a file's version cheaply.
type fileStamp struct {
	Size    int64 `json:"size"`
	ModTime int64 `json:"mtime_ns"`
	Inode   uint64
}

func stampOf(fi fs.FileInfo) fileStamp {
	s := fileStamp{Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.Inode = st.Ino
	}
	return s
}

// Open opens (creating if needed) the cache under stateDir/images.
func Open(stateDir string, opts Options) (*Cache, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case opts.Retries == 0:
		opts.Retries = 4
	case opts.Retries < 0:
		opts.Retries = 0
	}
	if opts.RetryWait <= 0 {
		opts.RetryWait = time.Second
	}
	fetch := opts.Fetcher
	if fetch == nil {
		fetch = &source.Fetcher{SiteDir: opts.SiteDir, Logger: opts.Logger}
	}
	c := &Cache{
		dir: filepath.Join(stateDir, "images"), opts: opts, fetch: fetch, log: opts.Logger,
		hashed: map[string]fileStamp{}, locks: map[string]*sync.Mutex{},
	}
	for _, d := range []string{"sha256", "sha512", partialDir, localDir, convertedDir, serveDir} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("image cache: %w", err)
		}
	}
	return c, nil
}

// Dir is the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// ServeDir is the directory to serve at /images/: it holds IMAGE/NAME for
// every file Ensure has made ready, and nothing unverified.
func (c *Cache) ServeDir() string { return filepath.Join(c.dir, serveDir) }

// Digest is a parsed checksum.
type Digest struct {
	Alg string // sha256 or sha512
	Hex string
}

func (d Digest) String() string { return d.Alg + ":" + d.Hex }

// ParseChecksum reads "sha256:<hex>" or "sha512:<hex>".
func ParseChecksum(sum string) (Digest, error) {
	alg, hx, _ := strings.Cut(sum, ":")
	n := map[string]int{"sha256": 64, "sha512": 128}[alg]
	if n == 0 || len(hx) != n {
		return Digest{}, fmt.Errorf("checksum %q: want sha256:<64 hex digits> or sha512:<128 hex digits>", sum)
	}
	if _, err := hex.DecodeString(hx); err != nil {
		return Digest{}, fmt.Errorf("checksum %q: %w", sum, err)
	}
	return Digest{Alg: alg, Hex: strings.ToLower(hx)}, nil
}

// BlobPath is where content with digest d lives once verified.
func (c *Cache) BlobPath(d Digest) string { return filepath.Join(c.dir, d.Alg, d.Hex) }

func (c *Cache) partialPath(d Digest) string {
	return filepath.Join(c.dir, partialDir, d.Alg+"-"+d.Hex)
}

// ServedFile is where f is in ServeDir.
func (c *Cache) ServedFile(f File) string { return filepath.Join(c.ServeDir(), f.Image, f.Name) }

// lock serialises work on one digest inside this process (a file lock on
// the partial download does it between processes).
func (c *Cache) lock(key string) func() {
	c.mu.Lock()
	m, ok := c.locks[key]
	if !ok {
		m = &sync.Mutex{}
		c.locks[key] = m
	}
	c.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Ensure makes f ready to serve: fetched (resuming a partial download),
// verified against its checksum, and linked at ServedFile(f). It returns
// the served blob's path. A local file without a checksum is hashed and
// copied in, so what is served cannot change under a machine mid-install.
// A qcow2 disk is converted (see EnsureServed).
func (c *Cache) Ensure(ctx context.Context, f File) (string, error) {
	s, err := c.EnsureServed(ctx, f)
	return s.Path, err
}

// Served is what the cache serves of a file and how an agent reads it.
type Served struct {
	// Path is the blob linked at ServedFile.
	Path string
	// Checksum and Format are those of the served bytes: the file's own,
	// or, for a qcow2 disk, those of the zstd stream it was converted to.
	Checksum, Format string
	// Published is the checksum of the file as published (the site's, or
	// the local file's sha256) when it differs from Checksum.
	Published string
}

// EnsureServed is Ensure, saying what is served. A disk that is a qcow2
// image (format qcow2, or a raw disk whose content begins with qcow2's
// magic) is verified as published, then converted once into a zstd stream
// of its raw disk with its own sha256, which is what is served; a qcow2
// that names a backing file is refused (ErrQcow2Refused).
func (c *Cache) EnsureServed(ctx context.Context, f File) (Served, error) {
	d, err := c.digest(ctx, f)
	if err != nil {
		return Served{}, err
	}
	unlock := c.lock(d.String())
	defer unlock()
	blob := c.BlobPath(d)
	ok, err := c.checkBlob(d)
	if err != nil {
		return Served{}, fmt.Errorf("image %q %s: %w", f.Image, f.Kind, err)
	}
	if !ok {
		if err := c.download(ctx, f, d); err != nil {
			return Served{}, fmt.Errorf("image %q %s %s: %w", f.Image, f.Kind, f.Source.Display(), err)
		}
	}
	s := Served{Path: blob, Checksum: d.String(), Format: f.Format}
	if f.Kind == KindDisk && (f.Format == "" || f.Format == FormatRaw || f.Format == FormatQcow2) {
		if s.Format == "" {
			s.Format = FormatRaw
		}
		isQcow2, err := IsQcow2(blob)
		switch {
		case err != nil:
			return Served{}, fmt.Errorf("image %q %s: %w", f.Image, f.Kind, err)
		case !isQcow2 && f.Format == FormatQcow2:
			return Served{}, fmt.Errorf("image %q %s %s: format is qcow2 but the file does not begin with qcow2's magic (QFI\\xfb)", f.Image, f.Kind, f.Source.Display())
		case isQcow2:
			cv, ok, err := c.converted(d)
			if err == nil && !ok {
				cv, err = c.convertQcow2(ctx, d)
			}
			if err != nil {
				return Served{}, fmt.Errorf("image %q %s %s: %w", f.Image, f.Kind, f.Source.Display(), err)
			}
			to, _ := ParseChecksum(cv.To)
			s = Served{Path: c.BlobPath(to), Checksum: cv.To, Format: cv.Format, Published: d.String()}
		}
	}
	if err := c.link(s.Path, c.ServedFile(f)); err != nil {
		return Served{}, fmt.Errorf("image %q %s: serve: %w", f.Image, f.Kind, err)
	}
	return s, nil
}

// digest is the content address of f: its checksum, or for a local file
// without one, the sha256 of its current content (importing it).
func (c *Cache) digest(ctx context.Context, f File) (Digest, error) {
	if f.Source.Checksum != "" {
		d, err := ParseChecksum(f.Source.Checksum)
		if err != nil {
			return Digest{}, fmt.Errorf("image %q %s: %w", f.Image, f.Kind, err)
		}
		return d, nil
	}
	p := source.LocalPath(c.opts.SiteDir, f.Source.URL)
	if p == "" {
		return Digest{}, fmt.Errorf("image %q %s: %s is fetched over the network and has no checksum; add one (sha256sum prints it)", f.Image, f.Kind, f.Source.Display())
	}
	if d, ok := c.localDigest(p); ok {
		return d, nil
	}
	im, err := c.Import(ctx, p)
	if err != nil {
		return Digest{}, fmt.Errorf("image %q %s: %w", f.Image, f.Kind, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Digest{}, fmt.Errorf("image %q %s: %w", f.Image, f.Kind, err)
	}
	// Recorded against the file as it was before the copy: if it changed
	// meanwhile, the next Ensure sees another stamp and imports again.
	_ = c.writeLocal(p, localRecord{Path: p, Stamp: stampOf(fi), Digest: im.SHA256.String()})
	return im.SHA256, nil
}

// localRecord remembers the digest of a local file without a checksum.
type localRecord struct {
	Path   string    `json:"path"`
	Stamp  fileStamp `json:"stamp"`
	Digest string    `json:"digest"`
}

func (c *Cache) localRecordPath(p string) string {
	sum := sha256.Sum256([]byte(p))
	return filepath.Join(c.dir, localDir, hex.EncodeToString(sum[:16])+".json")
}

func (c *Cache) readLocal(p string) (localRecord, bool) {
	b, err := os.ReadFile(c.localRecordPath(p))
	if err != nil {
		return localRecord{}, false
	}
	var r localRecord
	if json.Unmarshal(b, &r) != nil || r.Path != p {
		return localRecord{}, false
	}
	return r, true
}

// localDigest returns the recorded digest of p if p has not changed since.
func (c *Cache) localDigest(p string) (Digest, bool) {
	r, ok := c.readLocal(p)
	if !ok {
		return Digest{}, false
	}
	fi, err := os.Stat(p)
	if err != nil || stampOf(fi) != r.Stamp {
		return Digest{}, false
	}
	d, err := ParseChecksum(r.Digest)
	return d, err == nil
}

func (c *Cache) writeLocal(p string, r localRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.Write(c.localRecordPath(p), b, 0o600)
}

// checkBlob reports whether the blob of d is present and intact, hashing it
// the first time this process uses it. A corrupt blob is removed (with its
// served links) so it is fetched again.
func (c *Cache) checkBlob(d Digest) (bool, error) {
	blob := c.BlobPath(d)
	fi, err := os.Stat(blob)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	st, seen := c.hashed[blob]
	c.mu.Unlock()
	if seen && st == stampOf(fi) {
		return true, nil
	}
	got, err := hashFile(blob, d.Alg)
	if err != nil {
		return false, err
	}
	if got != d.Hex {
		c.log.Warn("cached image file is corrupt; removing it", "file", blob, "has", d.Alg+":"+got)
		if err := c.removeBlob(blob); err != nil {
			return false, err
		}
		return false, nil
	}
	c.mu.Lock()
	c.hashed[blob] = stampOf(fi)
	c.mu.Unlock()
	return true, nil
}

// hashFile returns the hex digest of the file at p.
func hashFile(p, alg string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := newHash(alg)
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// removeBlob deletes a blob and every served link to it.
func (c *Cache) removeBlob(blob string) error {
	fi, err := os.Stat(blob)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	_ = filepath.WalkDir(c.ServeDir(), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		if li, err := os.Stat(p); err == nil && os.SameFile(li, fi) {
			os.Remove(p)
		}
		return nil
	})
	c.mu.Lock()
	delete(c.hashed, blob)
	c.mu.Unlock()
	return os.Remove(blob)
}

// link makes dst a hard link to blob, replacing what was there atomically
// (a machine mid-download keeps the file it opened).
func (c *Cache) link(blob, dst string) error {
	bi, err := os.Stat(blob)
	if err != nil {
		return err
	}
	if di, err := os.Stat(dst); err == nil && os.SameFile(bi, di) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(dst), fmt.Sprintf(".%s.%d.tmp", filepath.Base(dst), time.Now().UnixNano()))
	if err := os.Link(blob, tmp); err != nil {
		return fmt.Errorf("link %s: %w (the state directory must allow hard links)", blob, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// download fetches f into the partial file of d, resuming what an earlier
// attempt left, and moves it into place once its digest matches.
func (c *Cache) download(ctx context.Context, f File, d Digest) error {
	part := c.partialPath(d)
	pf, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer pf.Close()
	if err := flock(ctx, pf); err != nil {
		return err
	}
	// Another process may have finished it while we waited for the lock.
	if ok, err := c.checkBlob(d); ok || err != nil {
		return err
	}
	restarted := false
	failures := 0
	wait := c.opts.RetryWait
	for {
		resumedAt, err := c.fetchInto(ctx, f, d, pf)
		if err == nil {
			break
		}
		var mismatch *mismatchError
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &mismatch) && resumedAt > 0 && !restarted:
			// The part fetched earlier may be of an older file at the same
			// URL: start over once before calling the source wrong.
			c.log.Warn("resumed download does not match its checksum; downloading again from the start", "url", f.Source.Display())
			restarted = true
			if err := pf.Truncate(0); err != nil {
				return err
			}
			continue
		case errors.As(err, &mismatch):
			pf.Close()
			os.Remove(part)
			return mismatch.err
		case errors.Is(err, errProgress):
			failures = 0 // it moved: resume at once, retries start afresh
			wait = c.opts.RetryWait
			c.log.Warn("download interrupted; resuming", "url", f.Source.Display(), "err", err)
			continue
		}
		failures++
		if failures > c.opts.Retries {
			return fmt.Errorf("giving up after %d attempts: %w", failures, err)
		}
		c.log.Warn("download failed; retrying", "url", f.Source.Display(), "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait *= 2
	}
	if err := pf.Sync(); err != nil {
		return err
	}
	if err := pf.Chmod(0o444); err != nil {
		return err
	}
	blob := c.BlobPath(d)
	if err := os.Rename(part, blob); err != nil {
		return err
	}
	syncDir(filepath.Dir(blob))
	if fi, err := os.Stat(blob); err == nil {
		c.mu.Lock()
		c.hashed[blob] = stampOf(fi)
		c.mu.Unlock()
	}
	return nil
}

// hideURL keeps a sensitive source's URL, whole or redacted, out of err's
// text, which is logged and shown.
func hideURL(err error, src source.Spec) error {
	if !src.Sensitive {
		return err
	}
	msg := err.Error()
	if u, perr := url.Parse(src.URL); perr == nil {
		msg = strings.ReplaceAll(msg, u.Redacted(), "(sensitive)")
		if u.User != nil {
			msg = strings.ReplaceAll(msg, u.User.Username(), "(sensitive)")
		}
	}
	return errors.New(strings.ReplaceAll(msg, src.URL, "(sensitive)"))
}

// errProgress marks a failed attempt that still got bytes.
var errProgress = errors.New("interrupted after progress")

type mismatchError struct{ err error }

func (e *mismatchError) Error() string { return e.err.Error() }

// fetchInto appends f's remaining bytes to pf and checks the whole file's
// digest. It returns the offset it resumed at.
func (c *Cache) fetchInto(ctx context.Context, f File, d Digest, pf *os.File) (int64, error) {
	fi, err := pf.Stat()
	if err != nil {
		return 0, err
	}
	off := fi.Size()
	st, err := c.fetch.Open(ctx, f.Source.URL, off)
	if err != nil {
		return off, hideURL(err, f.Source)
	}
	defer st.Close()
	if st.Offset != off {
		c.log.Info("source cannot resume; downloading from the start", "url", f.Source.Display(), "had", off)
		if err := pf.Truncate(st.Offset); err != nil {
			return off, err
		}
		off = st.Offset
	}
	h := newHash(d.Alg)
	// The bytes already here count towards the digest: read them back
	// rather than fetch them again.
	if _, err := pf.Seek(0, io.SeekStart); err != nil {
		return off, err
	}
	if _, err := io.CopyBuffer(h, io.LimitReader(pf, off), make([]byte, 1<<20)); err != nil {
		return off, fmt.Errorf("read partial download: %w", err)
	}
	if off > 0 {
		c.log.Info("resuming download", "url", f.Source.Display(), "at", off, "of", st.Size)
	}
	pw := &progressWriter{f: f, done: off, total: st.Size, fn: c.opts.Progress}
	n, err := copyHashed(io.MultiWriter(newWriteBehind(pf, off), pw), h, st)
	pw.report()
	if err != nil {
		if n > 0 {
			return off, fmt.Errorf("%w: %w", errProgress, err)
		}
		return off, err
	}
	if st.Size >= 0 && off+n != st.Size {
		return off, fmt.Errorf("%w: got %d of %d bytes", errProgress, off+n, st.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return off, &mismatchError{fmt.Errorf("%w: the site says %s, the download has %s:%s", ErrChecksum, d, d.Alg, got)}
	}
	return off, nil
}

// progressWriter counts bytes and reports them every MiB.
type progressWriter struct {
	f           File
	done, total int64
	last        int64
	fn          func(File, int64, int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.done-p.last >= 1<<20 {
		p.report()
	}
	return len(b), nil
}

func (p *progressWriter) report() {
	p.last = p.done
	if p.fn != nil {
		p.fn(p.f, p.done, p.total)
	}
}

// flock takes an exclusive lock on f, waiting while ctx allows.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// Imported is what Import added to the cache.
type Imported struct {
	SHA256, SHA512 Digest
	Size           int64
	// New is false when the cache already held the content.
	New bool
}

// Import copies the local file at p into the cache under both its sha256
// and its sha512, so a site naming it by either finds it. With this a site
// is fetched on a connected machine and carried to an air-gapped one.
func (c *Cache) Import(ctx context.Context, p string) (Imported, error) {
	in, err := os.Open(p)
	if err != nil {
		return Imported{}, fmt.Errorf("import: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Join(c.dir, partialDir), "import-*")
	if err != nil {
		return Imported{}, fmt.Errorf("import: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h256, h512 := sha256.New(), sha512.New()
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h256, h512), &ctxReader{ctx: ctx, r: in}, make([]byte, 1<<20))
	if err != nil {
		return Imported{}, fmt.Errorf("import %s: %w", p, err)
	}
	if err := tmp.Sync(); err != nil {
		return Imported{}, fmt.Errorf("import %s: %w", p, err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return Imported{}, fmt.Errorf("import %s: %w", p, err)
	}
	out := Imported{
		SHA256: Digest{"sha256", hex.EncodeToString(h256.Sum(nil))},
		SHA512: Digest{"sha512", hex.EncodeToString(h512.Sum(nil))},
		Size:   n,
	}
	for _, d := range []Digest{out.SHA256, out.SHA512} {
		unlock := c.lock(d.String())
		ok, err := c.checkBlob(d)
		if err == nil && !ok {
			out.New = true
			// A hard link keeps the temporary name valid for the second
			// digest; the deferred remove drops it.
			err = os.Link(tmp.Name(), c.BlobPath(d))
			if errors.Is(err, fs.ErrExist) {
				err = nil
			}
		}
		unlock()
		if err != nil {
			return Imported{}, fmt.Errorf("import %s: %w", p, err)
		}
	}
	syncDir(filepath.Join(c.dir, "sha256"))
	syncDir(filepath.Join(c.dir, "sha512"))
	return out, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// SourceFile is a convenience for callers holding a source rather than a
// catalog entry: the file it names for image, served under its base name.
func SourceFile(image string, kind Kind, src source.Spec) File {
	name := source.BaseName(src.URL)
	if name == "" {
		name = string(kind)
	}
	return File{Image: image, Kind: kind, Source: src, Name: name}
}
