// Package backup is metal's disaster recovery: consistent, checksummed
// snapshots of an inventory store, kept on an SFTP server with a retention
// count, restored into a new store, and pulled by a standby site that can be
// promoted when the primary is gone (with fencing through files beside the
// snapshots).
//
// A snapshot file is text:
//
//	{"format":"metal-snapshot","version":1,"site":"ams1",...}   header
//	{"k":"machines/web-01","v":"<base64>"}                       one record a line
//	...
//	sha256 <hex of every byte above this line>                  trailer
//
// and is named metal-<site>-<UTC time>-<store revision>.snap, so names sort
// by age and say which state they hold.
package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/metal-dev/metal/inventory"
)

const (
	formatName = "metal-snapshot"
	// FormatVersion is the snapshot file layout this metal writes; it
	// reads this one and older.
	FormatVersion = 1
)

// ErrCorrupt: a snapshot's checksum or layout is wrong.
var ErrCorrupt = errors.New("snapshot is corrupt")

// Header is the first line of a snapshot.
type Header struct {
	Format   string    `json:"format"`
	Version  int       `json:"version"`
	Site     string    `json:"site"`
	Created  time.Time `json:"created"`
	Revision int64     `json:"revision"` // store revision the snapshot holds
	Schema   int       `json:"schema"`   // inventory schema of the records
	Records  int       `json:"records"`
}

// Snapshot writes a consistent snapshot of store to w.
func Snapshot(ctx context.Context, store inventory.Store, w io.Writer, site string, now time.Time) (Header, error) {
	if !validSite(site) {
		return Header{}, fmt.Errorf("snapshot: site name %q: letters, digits, '.', '_' and '-' only", site)
	}
	// Records are collected first: the header carries their count and the
	// store's revision, known only once the dump is done.
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	info, err := store.Dump(ctx, func(r inventory.Record) error { return enc.Encode(r) })
	if err != nil {
		return Header{}, fmt.Errorf("snapshot: %w", err)
	}
	h := Header{Format: formatName, Version: FormatVersion, Site: site, Created: now.UTC().Truncate(time.Second), Revision: info.Revision, Schema: info.Schema, Records: info.Records}
	sum := sha256.New()
	mw := io.MultiWriter(w, sum)
	hb, _ := json.Marshal(h)
	if _, err := mw.Write(append(hb, '\n')); err != nil {
		return Header{}, fmt.Errorf("snapshot: write: %w", err)
	}
	if _, err := mw.Write(body.Bytes()); err != nil {
		return Header{}, fmt.Errorf("snapshot: write: %w", err)
	}
	if _, err := fmt.Fprintf(w, "sha256 %s\n", hex.EncodeToString(sum.Sum(nil))); err != nil {
		return Header{}, fmt.Errorf("snapshot: write: %w", err)
	}
	return h, nil
}

// Read parses and verifies a snapshot. Nothing is returned unless the
// checksum matches.
func Read(r io.Reader) (Header, []inventory.Record, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Header{}, nil, fmt.Errorf("read snapshot: %w", err)
	}
	cut := bytes.LastIndex(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if cut < 0 {
		return Header{}, nil, fmt.Errorf("no checksum trailer: %w", ErrCorrupt)
	}
	body, trailer := data[:cut+1], strings.TrimSpace(string(data[cut+1:]))
	want, ok := strings.CutPrefix(trailer, "sha256 ")
	if !ok {
		return Header{}, nil, fmt.Errorf("no checksum trailer (truncated?): %w", ErrCorrupt)
	}
	got := sha256.Sum256(body)
	if hex.EncodeToString(got[:]) != want {
		return Header{}, nil, fmt.Errorf("checksum mismatch: file says %s, content is %x: %w", want, got, ErrCorrupt)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	if !sc.Scan() {
		return Header{}, nil, fmt.Errorf("no header: %w", ErrCorrupt)
	}
	var h Header
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Format != formatName {
		return Header{}, nil, fmt.Errorf("not a metal snapshot: %w", ErrCorrupt)
	}
	if h.Version > FormatVersion {
		return Header{}, nil, fmt.Errorf("snapshot format %d is newer than this metal reads (%d): upgrade metal", h.Version, FormatVersion)
	}
	var recs []inventory.Record
	for sc.Scan() {
		var rec inventory.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return Header{}, nil, fmt.Errorf("record %d: %v: %w", len(recs)+1, err, ErrCorrupt)
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		return Header{}, nil, fmt.Errorf("read snapshot: %w", err)
	}
	if len(recs) != h.Records {
		return Header{}, nil, fmt.Errorf("header says %d records, file holds %d: %w", h.Records, len(recs), ErrCorrupt)
	}
	return h, recs, nil
}

var nameRE = regexp.MustCompile(`^metal-([A-Za-z0-9._-]+)-(\d{8}T\d{6}Z)-(\d+)\.snap$`)

func validSite(s string) bool {
	return s != "" && regexp.MustCompile(`^[A-Za-z0-9._-]+$`).MatchString(s)
}

// Name is the file name of a snapshot with header h.
func Name(h Header) string {
	return fmt.Sprintf("metal-%s-%s-%012d.snap", h.Site, h.Created.UTC().Format("20060102T150405Z"), h.Revision)
}

// SnapshotName is a parsed snapshot file name.
type SnapshotName struct {
	Name     string
	Site     string
	Created  time.Time
	Revision int64
}

// ParseName parses a snapshot file name; ok is false for other files
// (temporary uploads, heartbeats).
func ParseName(name string) (SnapshotName, bool) {
	m := nameRE.FindStringSubmatch(name)
	if m == nil {
		return SnapshotName{}, false
	}
	t, err := time.Parse("20060102T150405Z", m[2])
	if err != nil {
		return SnapshotName{}, false
	}
	rev, err := strconv.ParseInt(m[3], 10, 64)
	if err != nil {
		return SnapshotName{}, false
	}
	return SnapshotName{Name: name, Site: m[1], Created: t, Revision: rev}, true
}

// SplitURL splits sftp://…/DIR/NAME into the directory and the snapshot
// name: NAME is a snapshot file name, or "latest" (returned as ""). A URL
// ending in a directory means its latest snapshot.
func SplitURL(raw string) (dir, name string) {
	trimmed := strings.TrimRight(raw, "/")
	base := path.Base(trimmed)
	if base == "latest" {
		return strings.TrimSuffix(trimmed, "/latest"), ""
	}
	if _, ok := ParseName(base); ok {
		return strings.TrimSuffix(trimmed, "/"+base), base
	}
	return raw, ""
}
