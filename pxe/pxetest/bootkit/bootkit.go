// Package bootkit provides what a QEMU netboot test boots: a Debian kernel
// fetched with apt (cached between runs), a tiny initramfs built in Go that
// prints a marker on the serial console and powers off, and QEMU command
// lines for BIOS and UEFI machines that boot from the network.
//
// Nothing here is committed as a binary: the kernel comes from Debian's
// archive through apt, busybox from the busybox-static package, the
// firmware from ovmf and ipxe-qemu.
package bootkit

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/metal-dev/metal/internal/bootdisk"
	"github.com/metal-dev/metal/internal/qemu/testkernel"
	"github.com/metal-dev/metal/pxe/bootfiles"
)

// KernelMeta, CacheDir and Kernel: the kernel every QEMU test boots
// (package testkernel, which the accelerator probe of qemutest boots too).
const KernelMeta = testkernel.Meta

// CacheDir is where downloads are kept between runs (testkernel.CacheDir).
func CacheDir() string { return testkernel.CacheDir() }

// KernelPackages is where, under CacheDir, the test kernel's package is
// unpacked whole (testkernel.PackagesDir): tests that need its modules
// fetch it there too (initramfs.FetchPackage) and share the one download.
func KernelPackages() string { return filepath.Join(CacheDir(), testkernel.PackagesDir) }

// Kernel is testkernel.Kernel: a Debian cloud kernel's vmlinuz in cacheDir.
func Kernel(ctx context.Context, cacheDir string) (string, error) {
	return testkernel.Kernel(ctx, cacheDir)
}

// DiskGRUB is the name, in SecureBootDir, of Debian's signed GRUB for
// booting from disk, which an installed test image boots through
// (bootdisk.WriteSigned).
const DiskGRUB = bootfiles.DiskGRUB

// SecureBootDir returns a directory holding Debian's signed shim and
// network GRUB under the names metal serves them by (bootfiles.Shim,
// bootfiles.GRUB), for bootfiles.FindSecureBoot, and the disk GRUB as
// DiskGRUB. $METAL_SECUREBOOT_DIR, when set, is returned as it is. Else
// the packages are unpacked into cacheDir (bootfiles.FetchSecureBoot).
func SecureBootDir(ctx context.Context, cacheDir string) (string, error) {
	if d := os.Getenv(bootfiles.EnvSecureBootDir); d != "" {
		return d, nil
	}
	return bootfiles.FetchSecureBoot(ctx, cacheDir)
}

// Busybox is where Debian's busybox-static installs its binary.
const Busybox = bootdisk.Busybox

var markerRE = regexp.MustCompile(`^[A-Za-z0-9_.:=-]{8,128}$`)

// Initramfs builds an uncompressed newc initramfs whose /init prints marker
// on the console and powers the machine off. The marker must be 8-128 bytes
// of [A-Za-z0-9_.:=-]: it goes into a shell script, and a test looks for it
// on the serial console, where a short one could occur by chance.
func Initramfs(marker string) ([]byte, error) {
	return initramfs(marker,
		"/bin/busybox sleep 1",
		"/bin/busybox poweroff -f",
	)
}

// EchoPrefix starts each line EchoInitramfs's machine answers.
const EchoPrefix = "echo> "

// EchoInitramfs builds an initramfs whose /init prints marker on the
// console, then answers every line typed there with EchoPrefix and the
// line, until the machine is stopped: a serial console that shows what
// it received. The console's line discipline also echoes each key as it
// is typed, as a getty's would.
func EchoInitramfs(marker string) ([]byte, error) {
	return initramfs(marker,
		"while IFS= read -r line; do /bin/busybox echo \""+EchoPrefix+"$line\"; done",
		"/bin/busybox poweroff -f",
	)
}

// File is a file an initramfs carries beside busybox and /init (a
// kernel module its script loads, say). Name is its path in the archive,
// relative; its directories are made.
type File struct {
	Name string
	Body []byte
}

// ScriptInitramfs builds an initramfs whose /init prints marker on the
// console and then runs script, lines of busybox sh (busybox is
// /bin/busybox; nothing else is on a PATH), with files in the archive: a
// test's installed OS, which does what it must once booted.
func ScriptInitramfs(marker string, files []File, script ...string) ([]byte, error) {
	return build(marker, files, script)
}

func initramfs(marker string, then ...string) ([]byte, error) {
	return build(marker, nil, then)
}

func build(marker string, files []File, then []string) ([]byte, error) {
	if !markerRE.MatchString(marker) {
		return nil, fmt.Errorf("bootkit: marker %q: want 8-128 bytes of [A-Za-z0-9_.:=-]", marker)
	}
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return nil, fmt.Errorf("bootkit: %w (install the Debian package busybox-static)", err)
	}
	if !isStatic(bb) {
		return nil, fmt.Errorf("bootkit: %s is dynamically linked: install the Debian package busybox-static", Busybox)
	}
	// The kernel's built-in initramfs provides /dev/console, so this
	// script's output reaches console=ttyS0. devtmpfs is mounted as well,
	// in case a kernel was built without that default.
	init := strings.Join(append([]string{
		"#!/bin/busybox sh",
		"/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null",
		"/bin/busybox mount -t proc proc /proc",
		"exec </dev/console >/dev/console 2>&1",
		"/bin/busybox echo",
		"/bin/busybox echo " + marker,
	}, append(then, "")...), "\n")

	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	type entry struct {
		name string
		mode cpio.FileMode
		body []byte
	}
	entries := []entry{
		{"bin", cpio.TypeDir | 0o755, nil},
		{"dev", cpio.TypeDir | 0o755, nil},
		{"proc", cpio.TypeDir | 0o755, nil},
		{"sys", cpio.TypeDir | 0o755, nil},
		{"bin/busybox", cpio.TypeReg | 0o755, bb},
		{"bin/sh", cpio.TypeSymlink | 0o777, []byte("busybox")},
		{"init", cpio.TypeReg | 0o755, []byte(init)},
	}
	made := map[string]bool{"bin": true, "dev": true, "proc": true, "sys": true}
	for _, f := range files {
		var dirs []string
		for d := path.Dir(f.Name); d != "." && d != "/" && !made[d]; d = path.Dir(d) {
			made[d] = true
			dirs = append(dirs, d)
		}
		slices.Reverse(dirs)
		for _, d := range dirs {
			entries = append(entries, entry{d, cpio.TypeDir | 0o755, nil})
		}
		entries = append(entries, entry{f.Name, cpio.TypeReg | 0o644, f.Body})
	}
	for i, e := range entries {
		hdr := &cpio.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.body)), ModTime: mtime, Links: 1, Inode: int64(i + 1)}
		if e.mode&cpio.ModeType == cpio.TypeSymlink {
			hdr.Linkname = string(e.body)
		}
		if e.mode.IsDir() {
			hdr.Links = 2
		}
		if err := w.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("bootkit: cpio %s: %w", e.name, err)
		}
		if _, err := w.Write(e.body); err != nil {
			return nil, fmt.Errorf("bootkit: cpio %s: %w", e.name, err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("bootkit: cpio: %w", err)
	}
	return buf.Bytes(), nil
}

// isStatic reports whether an ELF file has no interpreter (PT_INTERP), the
// mark of a dynamically linked program, which an initramfs without a libc
// could not run.
func isStatic(b []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// ErrNoMarker is returned by WaitForMarker when the machine stopped, or the
// time ran out, before the marker appeared.
var ErrNoMarker = errors.New("marker not seen on the serial console")

// WaitForMarker polls the serial log at path until marker appears, done is
// closed (the VM exited), or ctx ends.
func WaitForMarker(ctx context.Context, path, marker string, done <-chan struct{}) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(marker)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrNoMarker, ctx.Err())
		case <-done:
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(marker)) {
				return nil
			}
			return fmt.Errorf("%w: the VM exited", ErrNoMarker)
		case <-tick.C:
		}
	}
}
