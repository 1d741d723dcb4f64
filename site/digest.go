package site

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"
)

// Digest hashes the content of every file the site was loaded from: a plan
// saved with it, or an apply submitted with it, is refused once the files
// have changed.
func (r *Result) Digest() string {
	names := make([]string, 0, len(r.Files))
	for n := range r.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(n), len(r.Files[n].Bytes))
		h.Write(r.Files[n].Bytes)
	}
	return hex.EncodeToString(h.Sum(nil))
}
