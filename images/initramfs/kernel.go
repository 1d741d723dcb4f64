package initramfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/metal-dev/metal/internal/debpkg"
)

// Kernel is a Debian kernel: its image and its modules.
type Kernel struct {
	Vmlinuz    string
	ModulesDir string
	Release    string
}

// DefaultPackage is the metapackage whose kernel the agent boots when the
// host has none installed.
const DefaultPackage = "linux-image-amd64"

// DefaultCacheDir keeps fetched kernel packages between builds.
const DefaultCacheDir = "/var/cache/metal/kernel"

// FindKernel locates the kernel the agent is built for (see the package
// documentation for the order), fetching it with apt if needed.
func FindKernel(ctx context.Context, opts Options) (Kernel, error) {
	if opts.KernelDir != "" {
		return kernelIn(opts.KernelDir, opts.KernelRelease)
	}
	if k, err := kernelIn("/", opts.KernelRelease); err == nil {
		return k, nil
	}
	pkg := opts.Package
	if pkg == "" {
		pkg = DefaultPackage
	}
	cache := opts.CacheDir
	if cache == "" {
		cache = DefaultCacheDir
	}
	root, err := FetchPackage(ctx, pkg, cache)
	if err != nil {
		return Kernel{}, err
	}
	return kernelIn(root, opts.KernelRelease)
}

// kernelIn finds boot/vmlinuz-REL with its lib/modules/REL under root.
func kernelIn(root, release string) (Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	sort.Strings(images)
	var found []string
	for i := len(images) - 1; i >= 0; i-- {
		rel := strings.TrimPrefix(filepath.Base(images[i]), "vmlinuz-")
		found = append(found, rel)
		if release != "" && rel != release {
			continue
		}
		mods := filepath.Join(root, "lib", "modules", rel)
		if _, err := os.Stat(filepath.Join(mods, "kernel")); err != nil {
			continue
		}
		return Kernel{Vmlinuz: images[i], ModulesDir: mods, Release: rel}, nil
	}
	if release != "" {
		return Kernel{}, fmt.Errorf("initramfs: no kernel %s with modules under %s (found: %s)", release, root, strings.Join(found, ", "))
	}
	return Kernel{}, fmt.Errorf("initramfs: no kernel with modules under %s (boot/vmlinuz-REL and lib/modules/REL/kernel): install %s or give --kernel-dir", root, DefaultPackage)
}

// FetchPackage unpacks the kernel package the metapackage pkg depends on
// today into cacheDir/<package>/ and returns that root; an unpacked one
// is reused. If apt cannot answer (offline, no lists), the newest already
// unpacked package is used (debpkg.FetchKernel).
func FetchPackage(ctx context.Context, pkg, cacheDir string) (string, error) {
	root, err := debpkg.FetchKernel(ctx, pkg, cacheDir)
	if err != nil {
		return "", fmt.Errorf("initramfs: fetch kernel %s: %w; or give --kernel-dir", pkg, err)
	}
	return root, nil
}
