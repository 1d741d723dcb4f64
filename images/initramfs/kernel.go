package initramfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
// unpacked package is used.
func FetchPackage(ctx context.Context, pkg, cacheDir string) (string, error) {
	for _, tool := range []string{"apt-cache", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("initramfs: %s not found: fetching a kernel needs Debian's apt and dpkg (or give --kernel-dir)", tool)
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("initramfs: kernel cache: %w", err)
	}
	unlock, err := debpkg.Lock(filepath.Join(cacheDir, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	versioned, err := dependency(ctx, pkg)
	if err != nil {
		if cached, _ := filepath.Glob(filepath.Join(cacheDir, "linux-image-*", "boot")); len(cached) > 0 {
			sort.Strings(cached)
			return filepath.Dir(cached[len(cached)-1]), nil
		}
		return "", err
	}
	root := filepath.Join(cacheDir, versioned)
	if _, err := os.Stat(filepath.Join(root, "boot")); err == nil {
		return root, nil
	}
	tmp, err := os.MkdirTemp(cacheDir, ".fetch-")
	if err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	defer os.RemoveAll(tmp)
	get := exec.CommandContext(ctx, "apt-get", "download", versioned)
	get.Dir = tmp
	if out, err := get.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initramfs: apt-get download %s: %w: %s (try apt-get update)", versioned, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("initramfs: apt-get download %s left %d .deb files", versioned, len(debs))
	}
	unpacked := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], unpacked).CombinedOutput(); err != nil {
		return "", fmt.Errorf("initramfs: dpkg-deb -x %s: %w: %s", debs[0], err, bytes.TrimSpace(out))
	}
	if err := os.Rename(unpacked, root); err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	return root, nil
}

var dependsRE = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-\S+)`)

// dependency asks apt which versioned kernel package pkg stands for; a
// versioned package name stands for itself.
func dependency(ctx context.Context, pkg string) (string, error) {
	if regexp.MustCompile(`^linux-image-\d`).MatchString(pkg) {
		return pkg, nil
	}
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", pkg).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("initramfs: apt-cache depends %s: %w: %s (run apt-get update)", pkg, err, bytes.TrimSpace(out))
	}
	m := dependsRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("initramfs: apt-cache depends %s names no linux-image package (run apt-get update)", pkg)
	}
	return string(m[1]), nil
}
