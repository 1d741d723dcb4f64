package site

import (
	"os"
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

// EtcFile is the site file of an installed metal (the Debian package's
// conffile).
const EtcFile = "/etc/metal/site.hcl"

// DefaultFile is the site file of a verb not told which: $METAL_SITE, else
// ./site.hcl if it exists, else EtcFile if it exists; else ./site.hcl, so
// that what is reported missing is the file in the working directory.
func DefaultFile() string {
	if p := os.Getenv("METAL_SITE"); p != "" {
		return p
	}
	for _, p := range []string{"site.hcl", EtcFile} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "site.hcl"
}
