package bootkit

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/metal-dev/metal/internal/qemu"
)

// Where the Debian packages put what a bootable disk needs.
const (
	SyslinuxMBR  = "/usr/lib/syslinux/mbr/mbr.bin"                 // syslinux-common
	SystemdBoot  = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi" // systemd-boot-efi
	diskSizeMiB  = 32
	partStartLBA = 2048 // 1 MiB, where partitioning tools start
)

// CheckDiskTools returns an error naming the Debian package of each tool
// DiskImage needs that is missing.
func CheckDiskTools() error {
	for _, t := range []struct{ prog, pkg string }{
		{"mkfs.vfat", "dosfstools"}, {"mcopy", "mtools"}, {"mmd", "mtools"}, {"syslinux", "syslinux"},
	} {
		if _, err := exec.LookPath(t.prog); err != nil {
			return fmt.Errorf("bootkit: %s not found: install the Debian package %s", t.prog, t.pkg)
		}
	}
	for path, pkg := range map[string]string{SyslinuxMBR: "syslinux-common", SystemdBoot: "systemd-boot-efi", Busybox: "busybox-static"} {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("bootkit: %s not found: install the Debian package %s", path, pkg)
		}
	}
	return nil
}

// DiskImage writes to path a 32 MiB raw disk image that boots, on SeaBIOS
// and on OVMF, the kernel with an initramfs printing marker on the serial
// console (see Initramfs). It is what an install test writes to a
// machine's disk, and then boots from that disk.
//
// Layout: an MBR (syslinux's boot code) with one active FAT partition at
// 1 MiB holding the kernel and initramfs, SYSLINUX for BIOS
// (syslinux.cfg) and systemd-boot as EFI/BOOT/BOOTX64.EFI for UEFI
// (loader/entries/marker.conf). The partition also has an empty
// /etc/cloud, so the install agent takes it for a cloud-init root and
// writes its NoCloud seed there, where a test can read it back with mtools
// (mtype -i disk@@1M).
//
// Everything is built in files with mtools and syslinux's mtools
// installer: nothing is mounted, no loop device is needed.
func DiskImage(ctx context.Context, kernel, marker, path string) error {
	initrd, err := Initramfs(marker)
	if err != nil {
		return err
	}
	return DiskImageWith(ctx, kernel, initrd, path)
}

// DiskImageWith is DiskImage with an initramfs of the caller's.
func DiskImageWith(ctx context.Context, kernel string, initrd []byte, path string) error {
	if err := CheckDiskTools(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".disk-")
	if err != nil {
		return fmt.Errorf("bootkit: %w", err)
	}
	defer os.RemoveAll(dir)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err == nil {
			err = os.WriteFile(p, b, 0o644)
		}
		return p
	}
	cmdline := "console=ttyS0 panic=-1"
	files := map[string]string{
		"/initrd.img": write("initrd.img", initrd),
		"/syslinux.cfg": write("syslinux.cfg", []byte(strings.Join([]string{
			"SERIAL 0 115200", "DEFAULT marker", "PROMPT 0", "TIMEOUT 0",
			"LABEL marker", "  LINUX /vmlinuz", "  INITRD /initrd.img", "  APPEND " + cmdline, "",
		}, "\n"))),
		"/loader/loader.conf": write("loader.conf", []byte("default marker.conf\ntimeout 0\n")),
		"/loader/entries/marker.conf": write("marker.conf", []byte(
			"title metal test disk\nlinux /vmlinuz\ninitrd /initrd.img\noptions "+cmdline+"\n")),
		"/vmlinuz":              kernel,
		"/EFI/BOOT/BOOTX64.EFI": SystemdBoot,
	}
	if err != nil {
		return fmt.Errorf("bootkit: %w", err)
	}

	partSectors := uint32((diskSizeMiB<<20)/512) - partStartLBA
	part := filepath.Join(dir, "part.img")
	run := func(prog string, args ...string) {
		if err != nil {
			return
		}
		cmd := exec.CommandContext(ctx, prog, args...)
		// mtools refuses images whose geometry it finds odd unless told
		// to skip the check.
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, cerr := cmd.CombinedOutput(); cerr != nil {
			err = fmt.Errorf("bootkit: %s %s: %w: %s", prog, strings.Join(args, " "), cerr, bytes.TrimSpace(out))
		}
	}
	// -h: the filesystem's hidden sectors are the partition's offset, which
	// SYSLINUX's boot sector adds to find its files.
	run("mkfs.vfat", "-C", "-n", "METALBOOT", "-h", fmt.Sprint(partStartLBA), part, fmt.Sprint(partSectors/2))
	run("mmd", "-i", part, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries", "::/etc", "::/etc/cloud")
	for dst, src := range files {
		run("mcopy", "-i", part, src, "::"+dst)
	}
	run("syslinux", "--install", part)
	if err != nil {
		return err
	}

	mbr, err := os.ReadFile(SyslinuxMBR)
	if err != nil {
		return fmt.Errorf("bootkit: %w", err)
	}
	head := make([]byte, partStartLBA*512)
	copy(head, mbr[:min(len(mbr), 440)])
	entry := head[446:462]
	entry[0] = 0x80                            // active: SYSLINUX's MBR boots it
	copy(entry[1:4], []byte{0xfe, 0xff, 0xff}) // CHS unused: LBA only
	entry[4] = 0x0e                            // FAT16, LBA
	copy(entry[5:8], []byte{0xfe, 0xff, 0xff})
	binary.LittleEndian.PutUint32(entry[8:], partStartLBA)
	binary.LittleEndian.PutUint32(entry[12:], partSectors)
	head[510], head[511] = 0x55, 0xaa

	body, err := os.ReadFile(part)
	if err != nil {
		return fmt.Errorf("bootkit: %w", err)
	}
	out := append(head, body...)
	if pad := diskSizeMiB<<20 - len(out); pad > 0 {
		out = append(out, make([]byte, pad)...)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("bootkit: %w", err)
	}
	return nil
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
	args := append(qemu.BaseArgs(accel, 256), "-no-reboot", "-serial", "file:"+serial)
	return firmwareArgs(append(args, DiskArgs(disk)...), fw, dir)
}
