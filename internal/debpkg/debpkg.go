// Package debpkg unpacks Debian packages without installing them: what
// metal boots (kernels, the signed Secure Boot chain) comes from Debian's
// archive at run time, never from the tree, and installing some of those
// packages would run their maintainer scripts (grub-install) on the host.
package debpkg

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Extract downloads pkg into dir with `apt-get download` and unpacks it
// with `dpkg-deb -x` (nothing is installed, no maintainer script runs),
// returning the root it was unpacked into (dir/root).
func Extract(ctx context.Context, dir, pkg string) (string, error) {
	for _, tool := range []struct{ prog, pkg string }{{"apt-get", "apt"}, {"dpkg-deb", "dpkg"}} {
		if _, err := exec.LookPath(tool.prog); err != nil {
			return "", fmt.Errorf("debpkg: %s not found: install the Debian package %s", tool.prog, tool.pkg)
		}
	}
	get := exec.CommandContext(ctx, "apt-get", "download", pkg)
	get.Dir = dir
	if out, err := get.CombinedOutput(); err != nil {
		return "", fmt.Errorf("debpkg: apt-get download %s: %w: %s (try apt-get update)", pkg, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("debpkg: apt-get download %s left %d .deb files", pkg, len(debs))
	}
	root := filepath.Join(dir, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("debpkg: dpkg-deb -x %s: %w: %s", debs[0], err, bytes.TrimSpace(out))
	}
	return root, nil
}

// Lock takes an exclusive flock on path, waiting for other holders (other
// processes filling the same cache), and returns its release.
func Lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("debpkg: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("debpkg: lock: %w", err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
