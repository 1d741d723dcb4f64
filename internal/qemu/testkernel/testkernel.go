// Package testkernel fetches the Linux kernel QEMU tests boot: a Debian
// cloud kernel, downloaded with apt and cached between runs. The tests'
// accelerator probe (qemutest) boots it too, so it lives apart from
// bootkit, whose own tests use that probe.
package testkernel

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

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

// PackagesDir is the folder of cacheDir the kernel package is unpacked
// into, whole: tests that need its modules unpack the same package into the
// same folder (initramfs.FetchPackage), so they all share one download.
const PackagesDir = "kernel-packages"

// Kernel returns the path of a Debian cloud kernel image
// (boot/vmlinuz-REL of the unpacked package) under cacheDir, downloading
// and unpacking the package only when the cache lacks the version apt names
// now, under a lock, so that concurrent test processes fetch it once. If
// apt cannot answer (no package lists, no mirror) an already cached kernel
// is used (debpkg.FetchKernel).
func Kernel(ctx context.Context, cacheDir string) (string, error) {
	root, err := debpkg.FetchKernel(ctx, Meta, filepath.Join(cacheDir, PackagesDir))
	if err != nil {
		return "", fmt.Errorf("testkernel: %w", err)
	}
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return "", fmt.Errorf("testkernel: %s holds %d boot/vmlinuz-* files, want 1", root, len(images))
	}
	return images[0], nil
}
