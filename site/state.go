package site

import (
	"path/filepath"
	"strings"
)

// DefaultStateDir puts leases and staged files beside a file:// state
// store; with etcd, in .metal beside the site file.
func DefaultStateDir(state, siteDir string) string {
	if p, ok := strings.CutPrefix(ResolveState(state, siteDir), "file://"); ok {
		return filepath.Dir(p)
	}
	return filepath.Join(siteDir, ".metal")
}

// ResolveState makes a relative file:// state path relative to the site
// file's directory, as the site file means it.
func ResolveState(state, siteDir string) string {
	if p, ok := strings.CutPrefix(state, "file://"); ok && !filepath.IsAbs(p) {
		return "file://" + filepath.Join(siteDir, p)
	}
	return state
}
