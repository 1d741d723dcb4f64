// Package testkernel fetches the Linux kernel QEMU tests boot: a Debian
// cloud kernel, downloaded with apt and cached between runs. The tests'
// accelerator probe (qemutest) boots it too, so it lives apart from
// bootkit, whose own tests use that probe.
package testkernel

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"

	"github.com/metal-dev/metal/internal/debpkg"
)

// Meta is the Debian metapackage whose dependency is the kernel
// fetched: the cloud flavour is small and boots under QEMU.
const Meta = "linux-image-cloud-amd64"

// CacheDir is where downloads are kept between runs: $METAL_TEST_CACHE,
// else $XDG_CACHE_HOME/metal-test, else /var/cache/metal-test.
func CacheDir() string {
	if d := os.Getenv("METAL_TEST_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "metal-test")
	}
	return "/var/cache/metal-test"
}

// Kernel returns the path of a Debian cloud kernel image (vmlinuz) in
// cacheDir, downloading it with `apt-get download` and unpacking it with
// `dpkg-deb -x` only when the cache lacks the version apt names now. A lock
// file keeps concurrent test processes from fetching it twice. If apt
// cannot answer (no package lists, no mirror) an already cached kernel of
// any version is used.
func Kernel(ctx context.Context, cacheDir string) (string, error) {
	for _, tool := range []struct{ prog, pkg string }{{"apt-cache", "apt"}, {"apt-get", "apt"}, {"dpkg-deb", "dpkg"}} {
		if _, err := exec.LookPath(tool.prog); err != nil {
			return "", fmt.Errorf("testkernel: %s not found: install the Debian package %s", tool.prog, tool.pkg)
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("testkernel: kernel cache: %w", err)
	}
	unlock, err := debpkg.Lock(filepath.Join(cacheDir, "kernel.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()

	pkg, err := kernelPackage(ctx)
	if err != nil {
		if cached, _ := filepath.Glob(filepath.Join(cacheDir, "linux-image-*", "vmlinuz")); len(cached) > 0 {
			return cached[len(cached)-1], nil
		}
		return "", err
	}
	vmlinuz := filepath.Join(cacheDir, pkg, "vmlinuz")
	if _, err := os.Stat(vmlinuz); err == nil {
		return vmlinuz, nil
	}

	tmp, err := os.MkdirTemp(cacheDir, "fetch-")
	if err != nil {
		return "", fmt.Errorf("testkernel: %w", err)
	}
	defer os.RemoveAll(tmp)
	root, err := debpkg.Extract(ctx, tmp, pkg)
	if err != nil {
		return "", err
	}
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return "", fmt.Errorf("testkernel: %s holds %d boot/vmlinuz-* files", pkg, len(images))
	}
	// Keep only the kernel: the package's modules are of no use to a test
	// initramfs that needs none, and are most of its size.
	if err := os.MkdirAll(filepath.Dir(vmlinuz), 0o755); err != nil {
		return "", fmt.Errorf("testkernel: %w", err)
	}
	if err := os.Rename(images[0], vmlinuz); err != nil {
		return "", fmt.Errorf("testkernel: %w", err)
	}
	return vmlinuz, nil
}

// kernelPackage asks apt which versioned package the metapackage stands for
// today ("linux-image-6.1.0-27-cloud-amd64").
func kernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", Meta).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("testkernel: apt-cache depends %s: %w: %s (run apt-get update)", Meta, err, bytes.TrimSpace(out))
	}
	m := regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-\S+)`).FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("testkernel: apt-cache depends %s names no linux-image package: %s (run apt-get update)", Meta, bytes.TrimSpace(out))
	}
	return string(m[1]), nil
}
