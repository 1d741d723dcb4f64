// Package iso builds the bootable CD image a machine boots the install
// agent from through its BMC's virtual media, where its NIC has no DHCP
// path to metal. The image is made by xorriso (Debian's xorriso package)
// and boots a BIOS machine through isolinux (Debian's isolinux and
// syslinux-common); what the agent needs to reach metal (its address,
// gateway, metal's URL, the task's secret) is on the kernel command line in
// isolinux's config, so one image serves one machine's one task.
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
}

// Debian's paths of isolinux's files.
var (
	isolinuxPaths = []string{"/usr/lib/ISOLINUX/isolinux.bin"}
	ldlinuxPaths  = []string{"/usr/lib/syslinux/modules/bios/ldlinux.c32"}
)

// ErrNoTools says xorriso or isolinux is not installed.
var ErrNoTools = errors.New("iso: the tools to build a boot CD are missing")

// FindTools finds xorriso and isolinux where Debian installs them.
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
