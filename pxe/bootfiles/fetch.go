package bootfiles

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/metal-dev/metal/internal/debpkg"
)

// DiskGRUB is the name, in FetchSecureBoot's directory, of Debian's signed
// GRUB for booting from disk (grub-efi-amd64-signed's grubx64.efi.signed,
// not the network build): an installed image boots through it behind shim
// (bootdisk.WriteSigned).
const DiskGRUB = "disk-grubx64.efi"

// debianDiskGRUB is where grub-efi-amd64-signed puts DiskGRUB.
const debianDiskGRUB = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"

// FetchSecureBoot returns cacheDir/secureboot, holding Debian's signed shim
// and network GRUB under the names metal serves them by (Shim, GRUB: a
// secureboot_dir for FindSecureBoot) and the disk GRUB as DiskGRUB. The
// packages shim-signed and grub-efi-amd64-signed are downloaded and
// unpacked there once, not installed: installing them runs grub-install on
// this host.
func FetchSecureBoot(ctx context.Context, cacheDir string) (string, error) {
	dir := filepath.Join(cacheDir, "secureboot")
	// DiskGRUB is unpacked last: with it, the directory is whole.
	if _, err := os.Stat(filepath.Join(dir, DiskGRUB)); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("secure boot chain cache: %w", err)
	}
	unlock, err := debpkg.Lock(filepath.Join(cacheDir, "secureboot.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, DiskGRUB)); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(cacheDir, "fetch-")
	if err != nil {
		return "", fmt.Errorf("secure boot chain: %w", err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "secureboot")
	if err := os.Mkdir(out, 0o755); err != nil {
		return "", fmt.Errorf("secure boot chain: %w", err)
	}
	wanted := map[string]map[string]string{
		"shim-signed":           {Shim: DebianSigned[Shim]},
		"grub-efi-amd64-signed": {GRUB: DebianSigned[GRUB], DiskGRUB: debianDiskGRUB},
	}
	for pkg, names := range wanted {
		pdir := filepath.Join(tmp, pkg)
		if err := os.Mkdir(pdir, 0o755); err != nil {
			return "", fmt.Errorf("secure boot chain: %w", err)
		}
		root, err := debpkg.Extract(ctx, pdir, pkg)
		if err != nil {
			return "", err
		}
		for name, p := range names {
			if err := os.Rename(filepath.Join(root, p), filepath.Join(out, name)); err != nil {
				return "", fmt.Errorf("secure boot chain: %s: %w", pkg, err)
			}
		}
	}
	// An older cache (without DiskGRUB) is replaced whole.
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("secure boot chain: %w", err)
	}
	if err := os.Rename(out, dir); err != nil {
		return "", fmt.Errorf("secure boot chain: %w", err)
	}
	return dir, nil
}
