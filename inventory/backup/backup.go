package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// ErrNoSnapshot: the target holds no snapshot of the site.
var ErrNoSnapshot = errors.New("no snapshot")

// Options are what `metal backup` passes.
type Options struct {
	Site string
	// Keep is how many snapshots of the site to keep; older ones are
	// deleted after a successful upload (0: keep all).
	Keep int
	// Unless is the store revision of the last snapshot written: when the
	// store is still at it, nothing is uploaded (Result.Unchanged).
	Unless int64
	// Encrypt seals the snapshot with age to the Remote's Key.
	Encrypt bool
	Now     func() time.Time
}

// Result says what a backup did.
type Result struct {
	Name    string
	Header  Header
	Size    int
	Deleted []string
	// Unchanged: the store was at Options.Unless; no snapshot was written.
	Unchanged bool
}

// Backup snapshots store and uploads it to r, then applies retention.
func Backup(ctx context.Context, store inventory.Store, r *Remote, opts Options) (Result, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	var buf bytes.Buffer
	h, err := Snapshot(ctx, store, &buf, opts.Site, now())
	if err != nil {
		return Result{}, err
	}
	if opts.Unless > 0 && h.Revision == opts.Unless {
		return Result{Header: h, Unchanged: true}, nil
	}
	res := Result{Name: Name(h), Header: h, Size: buf.Len()}
	if err := r.writeSigned(ctx, res.Name, buf.Bytes(), opts.Encrypt, false); err != nil {
		return Result{}, err
	}
	r.log.Info("snapshot uploaded", "name", res.Name, "bytes", res.Size, "revision", h.Revision, "target", r.target.String(),
		"signed", r.Key != nil, "encrypted", opts.Encrypt)
	if opts.Keep > 0 {
		if res.Deleted, err = Prune(ctx, r, opts.Site, opts.Keep); err != nil {
			return res, err
		}
	}
	return res, nil
}

// Snapshots lists the site's snapshots on r, oldest first.
func Snapshots(ctx context.Context, r *Remote, site string) ([]SnapshotName, error) {
	files, err := r.Files(ctx)
	if err != nil {
		return nil, err
	}
	var out []SnapshotName
	for _, f := range files {
		if n, ok := ParseName(f.Name); ok && n.Site == site {
			out = append(out, n)
		}
	}
	// Names sort by time then revision already; equal times (two backups in
	// one second) fall back to the revision.
	return out, nil
}

// fetchNewest fetches the newest snapshot of site that is not forged,
// skipping (and adding to refused, when given) those that are; names in
// refused are not downloaded again. When that snapshot is have, it
// returns its name alone, downloading nothing.
func fetchNewest(ctx context.Context, r *Remote, site, have string, refused map[string]bool) (string, Header, []inventory.Record, error) {
	snaps, err := Snapshots(ctx, r, site)
	if err != nil {
		return "", Header{}, nil, err
	}
	skipped := 0
	for i := len(snaps) - 1; i >= 0; i-- {
		name := snaps[i].Name
		if refused[name] {
			skipped++
			continue
		}
		if name == have {
			return name, Header{}, nil, nil
		}
		h, recs, err := Fetch(ctx, r, name)
		if errors.Is(err, ErrForged) {
			if refused != nil {
				refused[name] = true
			}
			skipped++
			continue
		}
		return name, h, recs, err
	}
	if skipped > 0 {
		return "", Header{}, nil, fmt.Errorf("%s: site %s: all %d snapshots refused: %w", r.target, site, skipped, ErrForged)
	}
	return "", Header{}, nil, fmt.Errorf("%s: site %s: %w", r.target, site, ErrNoSnapshot)
}

// Latest is the newest snapshot of the site on r.
func Latest(ctx context.Context, r *Remote, site string) (SnapshotName, error) {
	snaps, err := Snapshots(ctx, r, site)
	if err != nil {
		return SnapshotName{}, err
	}
	if len(snaps) == 0 {
		return SnapshotName{}, fmt.Errorf("%s: site %s: %w", r.target, site, ErrNoSnapshot)
	}
	return snaps[len(snaps)-1], nil
}

// staleTemp is how old a temporary upload must be before Prune removes it,
// so it never removes an upload in progress.
const staleTemp = time.Hour

// Prune deletes all but the newest keep snapshots of the site, and stale
// temporary files of interrupted uploads.
func Prune(ctx context.Context, r *Remote, site string, keep int) ([]string, error) {
	snaps, err := Snapshots(ctx, r, site)
	if err != nil {
		return nil, err
	}
	var deleted []string
	for i := 0; i < len(snaps)-keep; i++ {
		if err := r.Remove(ctx, snaps[i].Name); err != nil {
			return deleted, err
		}
		deleted = append(deleted, snaps[i].Name)
	}
	files, err := r.Files(ctx)
	if err != nil {
		return deleted, err
	}
	for _, f := range files {
		if strings.HasPrefix(f.Name, ".metal-"+site+"-") && strings.Contains(f.Name, ".tmp-") && time.Since(f.ModTime) > staleTemp {
			if err := r.Remove(ctx, f.Name); err == nil {
				deleted = append(deleted, f.Name)
			}
		}
	}
	return deleted, nil
}

// Fetch downloads snapshot name, decrypts it if sealed, and verifies its
// signature (with r.Key: ErrForged when missing or wrong) and checksum.
func Fetch(ctx context.Context, r *Remote, name string) (Header, []inventory.Record, error) {
	data, err := r.readSigned(ctx, name)
	if err != nil {
		return Header{}, nil, err
	}
	h, recs, err := Read(bytes.NewReader(data))
	if err != nil {
		return Header{}, nil, fmt.Errorf("%s: %s: %w", r.target, name, err)
	}
	return h, recs, nil
}

// RestoreOptions say how Restore loads a snapshot.
type RestoreOptions struct {
	// Replace drops what the store holds first; without it the store must
	// be empty (a new store), so a restore never mixes two states.
	Replace bool
}

// Restore downloads snapshot name (if empty, the newest that is not
// forged: a refused one is logged and the one before it tried), verifies
// it is of site (when given) and loads it into store.
func Restore(ctx context.Context, r *Remote, site, name string, store inventory.Store, opts RestoreOptions) (Header, error) {
	var (
		h    Header
		recs []inventory.Record
		err  error
	)
	if name == "" {
		name, h, recs, err = fetchNewest(ctx, r, site, "", nil)
	} else {
		h, recs, err = Fetch(ctx, r, name)
	}
	if err != nil {
		return Header{}, err
	}
	if site != "" && h.Site != site {
		return Header{}, fmt.Errorf("snapshot %s is of site %s, not %s", name, h.Site, site)
	}
	if err := store.Restore(ctx, recs, inventory.RestoreOptions{Replace: opts.Replace}); err != nil {
		return Header{}, fmt.Errorf("restore %s: %w", name, err)
	}
	return h, nil
}
