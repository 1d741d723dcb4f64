package debpkg

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// FetchKernel returns cacheDir/<package>, the root (boot/vmlinuz-REL,
// lib/modules/REL, ...) of the versioned kernel package the metapackage
// meta depends on today; a versioned name ("linux-image-6.1.0-27-amd64")
// stands for itself. The package is downloaded and unpacked (Extract)
// only when the cache lacks that version, under a lock file, so that
// processes sharing cacheDir fetch it once. If apt cannot say which version
// (offline, no package lists, no apt) the newest version already in
// cacheDir is used: a machine that fetched once keeps working offline.
//
// Errors say what the user can do (install apt or dpkg, run apt-get
// update); a caller adds its own prefix and its own way around them, such
// as a flag naming a kernel directory.
func FetchKernel(ctx context.Context, meta, cacheDir string) (root string, err error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("debpkg: kernel cache: %w", err)
	}
	unlock, err := Lock(filepath.Join(cacheDir, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()

	pkg, err := kernelPackage(ctx, meta)
	if err != nil {
		if cached := newestKernel(cacheDir); cached != "" {
			return cached, nil
		}
		return "", err
	}
	root = filepath.Join(cacheDir, pkg)
	if unpacked(root) {
		return root, nil
	}
	// The temporary directory is in cacheDir so that the rename below stays
	// on one file system, and starts with a dot so that newestKernel never
	// takes a half-unpacked package for a cached one.
	tmp, err := os.MkdirTemp(cacheDir, ".fetch-")
	if err != nil {
		return "", fmt.Errorf("debpkg: kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	got, err := Extract(ctx, tmp, pkg)
	if err != nil {
		return "", err
	}
	if !unpacked(got) {
		return "", fmt.Errorf("debpkg: %s holds no boot/ directory: is it a kernel package?", pkg)
	}
	// A complete root only ever appears by this rename, so a directory of
	// that name without boot/ is something else (an older cache layout that
	// kept only vmlinuz): rename cannot replace a non-empty directory.
	if err := os.RemoveAll(root); err != nil {
		return "", fmt.Errorf("debpkg: kernel cache: %w", err)
	}
	if err := os.Rename(got, root); err != nil {
		return "", fmt.Errorf("debpkg: kernel cache: %w", err)
	}
	return root, nil
}

// unpacked reports whether root is a kernel package FetchKernel finished.
func unpacked(root string) bool {
	fi, err := os.Stat(filepath.Join(root, "boot"))
	return err == nil && fi.IsDir()
}

// newestKernel returns the unpacked kernel package in cacheDir with the
// highest version, or "" if there is none.
func newestKernel(cacheDir string) string {
	boots, _ := filepath.Glob(filepath.Join(cacheDir, "linux-image-*", "boot"))
	var roots []string
	for _, b := range boots {
		if root := filepath.Dir(b); unpacked(root) {
			roots = append(roots, root)
		}
	}
	if len(roots) == 0 {
		return ""
	}
	return slices.MaxFunc(roots, func(a, b string) int { return compareVersions(filepath.Base(a), filepath.Base(b)) })
}

// versionedRE matches a package name that already names a kernel version.
var versionedRE = regexp.MustCompile(`^linux-image-\d`)

// kernelPackage asks apt which versioned kernel package meta stands for
// today ("linux-image-cloud-amd64" → "linux-image-6.1.0-27-cloud-amd64").
func kernelPackage(ctx context.Context, meta string) (string, error) {
	if versionedRE.MatchString(meta) {
		return meta, nil
	}
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return "", fmt.Errorf("debpkg: apt-cache not found: install the Debian package apt")
	}
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", meta).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("debpkg: apt-cache depends %s: %w: %s (run apt-get update)", meta, err, bytes.TrimSpace(out))
	}
	pkg, ok := parseDepends(out)
	if !ok {
		return "", fmt.Errorf("debpkg: apt-cache depends %s names no linux-image package: %s (run apt-get update)", meta, bytes.TrimSpace(out))
	}
	return pkg, nil
}

// dependsRE finds a metapackage's kernel in `apt-cache depends` output;
// "|Depends:" (one of alternatives) and "Recommends:" lines are not it.
var dependsRE = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-\d\S*)`)

// parseDepends returns the first linux-image package `apt-cache depends`
// lists as a plain dependency.
func parseDepends(out []byte) (string, bool) {
	m := dependsRE.FindSubmatch(out)
	if m == nil {
		return "", false
	}
	return string(m[1]), true
}

// compareVersions orders package names as versions: runs of digits compare
// as numbers, so that linux-image-6.1.0-27 comes after linux-image-6.1.0-9,
// which a plain string order puts last.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da == 0 || db == 0 {
			if c := cmp.Compare(a[0], b[0]); c != 0 {
				return c
			}
			a, b = a[1:], b[1:]
			continue
		}
		// Without leading zeros, a longer run is a larger number.
		na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
		if c := cmp.Compare(len(na), len(nb)); c != 0 {
			return c
		}
		if c := strings.Compare(na, nb); c != 0 {
			return c
		}
		a, b = a[da:], b[db:]
	}
	return cmp.Compare(len(a), len(b))
}

// digits returns how many bytes at the start of s are ASCII digits.
func digits(s string) int {
	n := 0
	for n < len(s) && '0' <= s[n] && s[n] <= '9' {
		n++
	}
	return n
}
