// Package iso builds the bootable CD image a machine boots the install
// agent from through its BMC's virtual media, where its NIC has no DHCP
// path to metal. The image is made by xorriso (Debian's xorriso package)
// and boots a BIOS machine through isolinux (Debian's isolinux and
// syslinux-common) and a UEFI machine through systemd-boot (Debian's
// systemd-boot-efi) in an EFI system partition image on the CD (El Torito
// for EFI, made with dosfstools and mtools: nothing is mounted). What the
// agent needs to reach metal (its address, gateway, metal's URL, the
// task's secret) is on the kernel command line of both loaders' configs,
// so one image serves one machine's one task.
package iso

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"unicode"
)

// Spec is what the image boots.
type Spec struct {
	// Kernel and Initrds are files on this host.
	Kernel  string
	Initrds []string
	// Cmdline is the kernel command line.
	Cmdline string
	// Label is the volume label (default METAL).
	Label string
}

// Tools are the programs and boot loader files the image is made of.
type Tools struct {
	Xorriso string
	// Isolinux is isolinux.bin, the El Torito boot image; LDLinux is the
	// ldlinux.c32 it loads its config with.
	Isolinux, LDLinux string
	// SystemdBoot is systemd-bootx64.efi, the UEFI loader; MkfsVfat and
	// Mcopy, Mmd make the FAT image it boots from.
	SystemdBoot, MkfsVfat, Mcopy, Mmd string
}

// Debian's paths of isolinux's files.
var (
	isolinuxPaths = []string{"/usr/lib/ISOLINUX/isolinux.bin"}
	ldlinuxPaths  = []string{"/usr/lib/syslinux/modules/bios/ldlinux.c32"}
	sdbootPaths   = []string{"/usr/lib/systemd/boot/efi/systemd-bootx64.efi"}
)

// ErrNoTools says xorriso or isolinux is not installed.
var ErrNoTools = errors.New("iso: the tools to build a boot CD are missing")

// FindTools finds xorriso, isolinux, systemd-boot and the FAT tools where
// Debian installs them.
func FindTools() (Tools, error) {
	var t Tools
	var err error
	if t.Xorriso, err = exec.LookPath("xorriso"); err != nil {
		return t, fmt.Errorf("%w: xorriso not found: install the Debian package xorriso", ErrNoTools)
	}
	if t.Isolinux = firstFile(isolinuxPaths); t.Isolinux == "" {
		return t, fmt.Errorf("%w: no isolinux.bin in %s: install the Debian package isolinux", ErrNoTools, strings.Join(isolinuxPaths, ", "))
	}
	if t.LDLinux = firstFile(ldlinuxPaths); t.LDLinux == "" {
		return t, fmt.Errorf("%w: no ldlinux.c32 in %s: install the Debian package syslinux-common", ErrNoTools, strings.Join(ldlinuxPaths, ", "))
	}
	if t.SystemdBoot = firstFile(sdbootPaths); t.SystemdBoot == "" {
		return t, fmt.Errorf("%w: no systemd-bootx64.efi in %s: install the Debian package systemd-boot-efi", ErrNoTools, strings.Join(sdbootPaths, ", "))
	}
	for _, tool := range []struct {
		path     *string
		name, pk string
	}{{&t.MkfsVfat, "mkfs.vfat", "dosfstools"}, {&t.Mcopy, "mcopy", "mtools"}, {&t.Mmd, "mmd", "mtools"}} {
		if *tool.path, err = exec.LookPath(tool.name); err != nil {
			return t, fmt.Errorf("%w: %s not found: install the Debian package %s", ErrNoTools, tool.name, tool.pk)
		}
	}
	return t, nil
}

func firstFile(paths []string) string {
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Build writes the image of s to out (replaced whole: written beside it
// and renamed, so a reader never sees half an image).
func (t Tools) Build(ctx context.Context, s Spec, out string) error {
	if s.Kernel == "" {
		return fmt.Errorf("iso: no kernel")
	}
	if err := checkCmdline(s.Cmdline); err != nil {
		return err
	}
	label := s.Label
	if label == "" {
		label = "METAL"
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".iso-")
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	defer os.RemoveAll(tmp)

	// The files go in by xorriso's graft points (path on the CD = path
	// here): nothing is copied but isolinux's config, written here.
	grafts := []string{
		"isolinux/isolinux.bin=" + t.Isolinux,
		"isolinux/ldlinux.c32=" + t.LDLinux,
		"boot/vmlinuz=" + s.Kernel,
	}
	var initrds []string
	for i, f := range s.Initrds {
		name := fmt.Sprintf("boot/initrd%d", i)
		grafts = append(grafts, name+"="+f)
		initrds = append(initrds, "/"+name)
	}
	cfg := filepath.Join(tmp, "isolinux.cfg")
	if err := os.WriteFile(cfg, isolinuxConfig(initrds, s.Cmdline), 0o644); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	grafts = append(grafts, "isolinux/isolinux.cfg="+cfg)
	esp := filepath.Join(tmp, "efiboot.img")
	if err := t.efiImage(ctx, tmp, esp, s); err != nil {
		return err
	}
	grafts = append(grafts, "boot/efiboot.img="+esp)
	for _, g := range grafts {
		// xorriso reads '=' and '\' in a graft point's source as syntax.
		if _, src, _ := strings.Cut(g, "="); strings.ContainsAny(src, "=\\") {
			return fmt.Errorf("iso: file %q: its name holds '=' or '\\'", src)
		}
	}

	img := filepath.Join(tmp, "image.iso")
	args := []string{"-as", "mkisofs", "-quiet", "-o", img, "-V", label, "-J", "-R",
		"-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
		"-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
		"-eltorito-alt-boot", "-e", "boot/efiboot.img", "-no-emul-boot",
		"-graft-points"}
	cmd := exec.CommandContext(ctx, t.Xorriso, append(args, grafts...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("iso: xorriso: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Rename(img, out); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	return nil
}

// isolinuxConfig boots the kernel at once, with no menu to wait at. Its
// messages go to the first serial port too, where a BMC's serial console
// shows why a boot stopped.
// efiImage writes to out the FAT image UEFI firmware boots the CD from:
// systemd-boot as the removable-media loader (EFI/BOOT/BOOTX64.EFI) and
// one loader entry, with the kernel and initrds beside it, since
// systemd-boot reads only its own partition.
func (t Tools) efiImage(ctx context.Context, tmp, out string, s Spec) error {
	files := map[string]string{"/EFI/BOOT/BOOTX64.EFI": t.SystemdBoot, "/vmlinuz": s.Kernel}
	entry := "title metal install agent\nlinux /vmlinuz\n"
	for i, f := range s.Initrds {
		name := fmt.Sprintf("/initrd%d", i)
		files[name] = f
		entry += "initrd " + name + "\n"
	}
	if s.Cmdline != "" {
		entry += "options " + s.Cmdline + "\n"
	}
	for dst, body := range map[string]string{"/loader/loader.conf": "default agent.conf\ntimeout 0\n", "/loader/entries/agent.conf": entry} {
		p := filepath.Join(tmp, filepath.Base(dst))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return fmt.Errorf("iso: %w", err)
		}
		files[dst] = p
	}
	var size int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("iso: %w", err)
		}
		size += fi.Size()
	}
	// FAT's own tables and the clusters' slack: a tenth more, and a MiB.
	kib := size/1024 + size/10240 + 1024
	run := func(prog string, args ...string) error {
		cmd := exec.CommandContext(ctx, prog, args...)
		// mtools refuses images whose geometry it finds odd unless told
		// to skip the check.
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("iso: %s: %w: %s", filepath.Base(prog), err, bytes.TrimSpace(b))
		}
		return nil
	}
	if err := run(t.MkfsVfat, "-C", "-n", "METALEFI", out, fmt.Sprint(kib)); err != nil {
		return err
	}
	if err := run(t.Mmd, "-i", out, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"); err != nil {
		return err
	}
	for dst, src := range files {
		if err := run(t.Mcopy, "-i", out, src, "::"+dst); err != nil {
			return err
		}
	}
	return nil
}

func isolinuxConfig(initrds []string, cmdline string) []byte {
	var b strings.Builder
	b.WriteString("serial 0 115200\ndefault agent\nprompt 0\ntimeout 0\nlabel agent\n  kernel /boot/vmlinuz\n  append")
	if len(initrds) > 0 {
		b.WriteString(" initrd=" + strings.Join(initrds, ","))
	}
	if cmdline != "" {
		b.WriteString(" " + cmdline)
	}
	b.WriteString("\n")
	return []byte(b.String())
}

// checkCmdline refuses what would end isolinux's append line early or
// outgrow it.
func checkCmdline(s string) error {
	if len(s) > 1500 {
		return fmt.Errorf("iso: kernel command line of %d bytes: isolinux takes at most 1500 here", len(s))
	}
	for _, r := range s {
		if r > unicode.MaxASCII || (unicode.IsControl(r)) {
			return fmt.Errorf("iso: kernel command line %q: only printable ASCII", s)
		}
	}
	return nil
}
