package lab

import (
	"context"
	"fmt"
	"os"

	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// Marker is what the lab's disk image prints on the serial console when a
// VM boots it: the proof that the VM was provisioned and boots its disk.
const Marker = "metal-lab-booted-from-disk"

// BuildTestImage writes the lab's disk image to path: Debian's cloud
// kernel (fetched with apt-get download and cached, never installed) and
// an initramfs that prints Marker and powers off, bootable by SeaBIOS and
// by OVMF (bootkit.DiskImage).
func BuildTestImage(ctx context.Context, path string) error {
	kernel, err := bootkit.Kernel(ctx, bootkit.CacheDir())
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := bootkit.DiskImage(ctx, kernel, Marker, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("test disk image: %w", err)
	}
	return nil
}
