package images

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/metal-dev/metal/images/source"
)

// States of a file in the cache.
const (
	StateMissing  = "missing"  // not fetched
	StatePartial  = "partial"  // a download stopped midway; fetch resumes it
	StateCached   = "cached"   // held, verified when it was stored
	StateVerified = "verified" // held and hashed again just now
	StateCorrupt  = "corrupt"  // held but no longer matches; removed
	StateLocal    = "local"    // a local file without checksum, not imported yet
)

// Status is where one file of the catalog stands in the cache.
type Status struct {
	File   File   `json:"-"`
	State  string `json:"state"`
	Digest string `json:"digest,omitempty"`
	// Size is the blob's size when held, else the partial download's.
	Size int64  `json:"size"`
	Blob string `json:"blob,omitempty"`
	// Served is true when the file is linked into the served tree.
	Served bool `json:"served"`
}

// Status reports f's state without hashing anything.
func (c *Cache) Status(f File) Status {
	s := Status{File: f, State: StateMissing}
	d, ok := c.knownDigest(f)
	if !ok {
		s.State = StateLocal
		return s
	}
	s.Digest = d.String()
	if fi, err := os.Stat(c.BlobPath(d)); err == nil {
		s.State, s.Size, s.Blob = StateCached, fi.Size(), c.BlobPath(d)
		if si, err := os.Stat(c.ServedFile(f)); err == nil && os.SameFile(fi, si) {
			s.Served = true
		} else if err == nil {
			// A qcow2 disk is served as what it was converted to.
			if _, to, ok := c.readConversion(d); ok {
				if ti, err := os.Stat(c.BlobPath(to)); err == nil && os.SameFile(ti, si) {
					s.Served = true
				}
			}
		}
		return s
	}
	if fi, err := os.Stat(c.partialPath(d)); err == nil && fi.Size() > 0 {
		s.State, s.Size = StatePartial, fi.Size()
	}
	return s
}

// knownDigest is f's digest if it is known without reading the file.
func (c *Cache) knownDigest(f File) (Digest, bool) {
	if f.Source.Checksum != "" {
		d, err := ParseChecksum(f.Source.Checksum)
		return d, err == nil
	}
	p := source.LocalPath(c.opts.SiteDir, f.Source.URL)
	if p == "" {
		return Digest{}, false
	}
	return c.localDigest(p)
}

// Verify hashes f's blob again; a blob that no longer matches is removed,
// with its served links, and reported corrupt.
func (c *Cache) Verify(ctx context.Context, f File) (Status, error) {
	s := c.Status(f)
	if s.State != StateCached {
		return s, nil
	}
	d, _ := c.knownDigest(f)
	unlock := c.lock(d.String())
	defer unlock()
	if err := ctx.Err(); err != nil {
		return s, err
	}
	got, err := hashFile(s.Blob, d.Alg)
	if err != nil {
		return s, err
	}
	if got != d.Hex {
		if err := c.removeBlob(s.Blob); err != nil {
			return s, err
		}
		s.State = StateCorrupt
		return s, fmt.Errorf("image %q %s: %w: %s has %s:%s, want %s; removed it, run metal images fetch",
			f.Image, f.Kind, ErrChecksum, s.Blob, d.Alg, got, d)
	}
	if fi, err := os.Stat(s.Blob); err == nil {
		c.mu.Lock()
		c.hashed[s.Blob] = stampOf(fi)
		c.mu.Unlock()
	}
	s.State = StateVerified
	return s, nil
}

// Removed is one file GC deleted (or would delete).
type Removed struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// GC removes what no file of the catalog references: blobs, partial
// downloads, records of local files and served links. Temporary files of an
// import or link younger than an hour are left to their writer. With dryRun
// it only reports.
func (c *Cache) GC(cat *Catalog, dryRun bool) ([]Removed, error) {
	keep := map[string]bool{}
	keepServed := map[string]bool{}
	keepLocal := map[string]bool{}
	for _, f := range cat.Files {
		keepServed[c.ServedFile(f)] = true
		if p := source.LocalPath(c.opts.SiteDir, f.Source.URL); p != "" && f.Source.Checksum == "" {
			keepLocal[c.localRecordPath(p)] = true
		}
		if d, ok := c.knownDigest(f); ok {
			keep[c.BlobPath(d)] = true
			keep[c.partialPath(d)] = true
		}
	}
	var out []Removed
	var errs []error
	remove := func(p string, fi fs.FileInfo) {
		out = append(out, Removed{Path: p, Size: fi.Size()})
		if dryRun {
			return
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	young := func(fi fs.FileInfo) bool { return time.Since(fi.ModTime()) < time.Hour }
	for _, sub := range []string{"sha256", "sha512", partialDir, localDir} {
		entries, err := os.ReadDir(filepath.Join(c.dir, sub))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			p := filepath.Join(c.dir, sub, e.Name())
			fi, err := e.Info()
			if err != nil || keep[p] || keepLocal[p] {
				continue
			}
			if (strings.HasPrefix(e.Name(), "import-") || strings.HasPrefix(e.Name(), ".")) && young(fi) {
				continue
			}
			remove(p, fi)
		}
	}
	var dirs []string
	_ = filepath.WalkDir(c.ServeDir(), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.IsDir() {
			if p != c.ServeDir() {
				dirs = append(dirs, p)
			}
			return nil
		}
		fi, err := e.Info()
		if err != nil || keepServed[p] || (strings.HasPrefix(e.Name(), ".") && young(fi)) {
			return nil
		}
		// A served link shares its blob's bytes: report it as 0 so the
		// freed size is not counted twice.
		remove(p, zeroSize{fi})
		return nil
	})
	if !dryRun {
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			os.Remove(d) // only succeeds when empty
		}
	}
	return out, errors.Join(errs...)
}

type zeroSize struct{ fs.FileInfo }

func (zeroSize) Size() int64 { return 0 }
