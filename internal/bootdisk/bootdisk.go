// Package bootdisk writes small raw disk images that boot a kernel and an
// initramfs on SeaBIOS and on OVMF: the test image the lab installs on its
// machines, and what the install tests write and boot.
package bootdisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Where the Debian packages put what a bootable disk needs.
const (
	SyslinuxMBR  = "/usr/lib/syslinux/mbr/mbr.bin"                 // syslinux-common
	SystemdBoot  = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi" // systemd-boot-efi
	diskSizeMiB  = 32
	partStartLBA = 2048 // 1 MiB, where partitioning tools start
)

// Busybox is where Debian's busybox-static installs its binary.
const Busybox = "/bin/busybox"

// CheckTools returns an error naming the Debian package of each tool
// Write needs that is missing.
func CheckTools() error {
	for _, t := range []struct{ prog, pkg string }{
		{"mkfs.vfat", "dosfstools"}, {"mcopy", "mtools"}, {"mmd", "mtools"}, {"syslinux", "syslinux"},
	} {
		if _, err := exec.LookPath(t.prog); err != nil {
			return fmt.Errorf("bootdisk: %s not found: install the Debian package %s", t.prog, t.pkg)
		}
	}
	for path, pkg := range map[string]string{SyslinuxMBR: "syslinux-common", SystemdBoot: "systemd-boot-efi", Busybox: "busybox-static"} {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("bootdisk: %s not found: install the Debian package %s", path, pkg)
		}
	}
	return nil
}

// Write writes to path a 32 MiB raw disk image that boots, on SeaBIOS and
// on OVMF, kernel with the initramfs initrd, its console on the serial
// port.
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
func Write(ctx context.Context, kernel string, initrd []byte, path string) error {
	return write(ctx, kernel, initrd, path, nil)
}

// Signed is the Secure Boot chain of a disk: Debian's signed shim and its
// signed GRUB (the disk build, grub-efi-amd64-signed's grubx64.efi.signed,
// not the network one), so that a machine with Secure Boot on boots the
// disk's (signed) kernel as an installed Debian does.
type Signed struct {
	Shim, GRUB string
}

// WriteSigned is Write for a machine with Secure Boot on: UEFI boots shim
// as EFI/BOOT/BOOTX64.EFI, shim the GRUB beside it, and GRUB reads
// EFI/debian/grub.cfg (its prefix) or, failing that, the grub.cfg beside
// it. kernel must be signed by a key shim trusts.
func WriteSigned(ctx context.Context, kernel string, initrd []byte, path string, chain Signed) error {
	return write(ctx, kernel, initrd, path, &chain)
}

func write(ctx context.Context, kernel string, initrd []byte, path string, signed *Signed) error {
	if err := CheckTools(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".disk-")
	if err != nil {
		return fmt.Errorf("bootdisk: %w", err)
	}
	defer os.RemoveAll(dir)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err == nil {
			err = os.WriteFile(p, b, 0o644)
		}
		return p
	}
	// no_timer_check: under TCG on a busy host the kernel's IO-APIC timer
	// check can time out and panic ("IO-APIC + timer doesn't work!").
	cmdline := "console=ttyS0 panic=-1 no_timer_check"
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
	if signed != nil {
		grubCfg := write("grub.cfg", []byte("set timeout=0\nlinux /vmlinuz "+cmdline+"\ninitrd /initrd.img\nboot\n"))
		files["/EFI/BOOT/BOOTX64.EFI"] = signed.Shim
		files["/EFI/BOOT/grubx64.efi"] = signed.GRUB
		files["/EFI/BOOT/grub.cfg"] = grubCfg
		files["/EFI/debian/grub.cfg"] = grubCfg
	}
	if err != nil {
		return fmt.Errorf("bootdisk: %w", err)
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
			err = fmt.Errorf("bootdisk: %s %s: %w: %s", prog, strings.Join(args, " "), cerr, bytes.TrimSpace(out))
		}
	}
	// -h: the filesystem's hidden sectors are the partition's offset, which
	// SYSLINUX's boot sector adds to find its files.
	run("mkfs.vfat", "-C", "-n", "METALBOOT", "-h", fmt.Sprint(partStartLBA), part, fmt.Sprint(partSectors/2))
	run("mmd", "-i", part, "::/EFI", "::/EFI/BOOT", "::/EFI/debian", "::/loader", "::/loader/entries", "::/etc", "::/etc/cloud")
	for dst, src := range files {
		run("mcopy", "-i", part, src, "::"+dst)
	}
	run("syslinux", "--install", part)
	if err != nil {
		return err
	}

	mbr, err := os.ReadFile(SyslinuxMBR)
	if err != nil {
		return fmt.Errorf("bootdisk: %w", err)
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
		return fmt.Errorf("bootdisk: %w", err)
	}
	out := append(head, body...)
	if pad := diskSizeMiB<<20 - len(out); pad > 0 {
		out = append(out, make([]byte, pad)...)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("bootdisk: %w", err)
	}
	return nil
}
