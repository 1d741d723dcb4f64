package bootkit

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"

	"github.com/metal-dev/metal/internal/bootdisk"
	"github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/pxe/bootfiles"
)

// DiskImage writes to path a raw disk image (bootdisk.Write) that boots,
// on SeaBIOS and on OVMF, the kernel with an initramfs printing marker on
// the serial console (see Initramfs). It is what an install test writes
// to a machine's disk, and then boots from that disk.
func DiskImage(ctx context.Context, kernel, marker, path string) error {
	initrd, err := Initramfs(marker)
	if err != nil {
		return err
	}
	return bootdisk.Write(ctx, kernel, initrd, path)
}

// SignedDiskImage is DiskImage for a machine with Secure Boot on: it
// boots through the signed shim and disk GRUB in signedDir
// (SecureBootDir), and kernel must be signed.
func SignedDiskImage(ctx context.Context, kernel, marker, path, signedDir string) error {
	initrd, err := Initramfs(marker)
	if err != nil {
		return err
	}
	return bootdisk.WriteSigned(ctx, kernel, initrd, path, bootdisk.Signed{
		Shim: filepath.Join(signedDir, bootfiles.Shim), GRUB: filepath.Join(signedDir, DiskGRUB)})
}

// GzipFile returns the file at path, a disk image, and its gzip, as an
// install test serves it.
func GzipFile(path string) (raw, gz []byte, err error) {
	raw, err = os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(raw); err != nil {
		return nil, nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return raw, b.Bytes(), nil
}

// DiskArgs are QEMU arguments adding path as the machine's virtio disk,
// booted after the NIC (bootindex 2), so a machine with no netboot to
// do, or whose netboot says "boot locally", boots from it.
func DiskArgs(path string) []string {
	return []string{
		"-drive", "file=" + path + ",format=raw,if=none,id=d0,cache=unsafe",
		"-device", "virtio-blk-pci,drive=d0,serial=metal-disk-0,bootindex=2",
	}
}

// DiskBootArgs are QEMU arguments for a machine with no NIC that boots
// disk under accel: the direct proof that a disk image boots, without a
// netboot first.
func DiskBootArgs(fw Firmware, accel, disk, serial, dir string) ([]string, error) {
	// 512 MiB: in 256, Debian's kernel behind shim and GRUB on the
	// Secure Boot firmware dies before its console starts.
	args := append(qemu.BaseArgs(accel, 512), "-no-reboot", "-serial", "file:"+serial)
	return firmwareArgs(append(args, DiskArgs(disk)...), fw, dir)
}
