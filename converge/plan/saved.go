package plan

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/metal-dev/metal/internal/atomicfile"
)

// Save writes p to path as JSON (`metal plan --out`), stamped with the
// site file it is of and the digest of that file's content, so that
// applying it later can tell whether the site changed.
func Save(path string, p *Plan, siteFile, siteDigest string) error {
	abs, err := filepath.Abs(siteFile)
	if err != nil {
		return fmt.Errorf("save plan: %w", err)
	}
	p.SiteFile, p.SiteDigest = abs, siteDigest
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("save plan: %w", err)
	}
	return atomicfile.Write(path, append(data, '\n'), 0o644)
}

// ReadSaved returns the plan saved at path by Save, or nil when path holds
// something else (a site file).
func ReadSaved(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if trimmed := strings.TrimSpace(string(b)); !strings.HasPrefix(trimmed, "{") {
		return nil, nil
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s looks like a saved plan but is not one: %w", path, err)
	}
	if p.SiteFile == "" || p.Digest == "" {
		return nil, fmt.Errorf("%s is not a plan saved by `metal plan --out` (no site file or digest in it)", path)
	}
	return &p, nil
}
