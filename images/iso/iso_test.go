package iso_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/images/iso"
	"github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

func tools(t *testing.T) iso.Tools {
	t.Helper()
	testenv.Integration(t, "xorriso and isolinux")
	tl, err := iso.FindTools()
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// TestBootsInQEMU: a BIOS machine (isolinux) and a UEFI one (OVMF,
// systemd-boot from the CD's EFI image) with the image in their CD drive
// and no disk or NIC boot the kernel with the image's command line and
// its two initrds, whose /init prints the marker.
func TestBootsInQEMU(t *testing.T) {
	tl := tools(t)
	if err := bootkit.CheckQEMU(bootkit.BIOS); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel) // after the parallel subtests
	kernel, err := bootkit.Kernel(ctx, bootkit.CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	marker := "metal-iso-boots"
	img, err := bootkit.Initramfs(marker)
	must(t, err)
	initrd := filepath.Join(dir, "initrd.cpio")
	must(t, os.WriteFile(initrd, img, 0o644))
	// A second initrd (the same archive again): the image carries and
	// names every one.
	second := filepath.Join(dir, "second.cpio")
	must(t, os.WriteFile(second, img, 0o644))

	out := filepath.Join(dir, "agent.iso")
	cmdline := "console=ttyS0 panic=-1 no_timer_check metal.check=iso-cmdline"
	must(t, tl.Build(ctx, iso.Spec{Kernel: kernel, Initrds: []string{initrd, second}, Cmdline: cmdline}, out))

	for _, fw := range []bootkit.Firmware{bootkit.BIOS, bootkit.UEFI} {
		t.Run(string(fw), func(t *testing.T) {
			t.Parallel()
			bootCD(t, ctx, fw, out, marker)
		})
	}
}

// bootCD boots a QEMU machine of firmware fw from the CD img until its
// console shows marker and the image's command line.
func bootCD(t *testing.T, ctx context.Context, fw bootkit.Firmware, img, marker string) {
	dir := t.TempDir()
	serial := filepath.Join(dir, "serial.log")
	args := append(qemu.BaseArgs(qemutest.Accel(t), 512), "-no-reboot", "-serial", "file:"+serial,
		"-drive", "file="+img+",media=cdrom,if=none,id=cd0,readonly=on", "-device", "ide-cd,drive=cd0,bootindex=0")
	if fw == bootkit.UEFI {
		if err := bootkit.CheckQEMU(bootkit.UEFI); err != nil {
			t.Fatal(err)
		}
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		must(t, qemu.NewOVMFVars(vars))
		args = append(args, qemu.UEFIArgs(vars)...)
	}
	q := exec.Command("qemu-system-x86_64", args...)
	qout := &strings.Builder{}
	q.Stdout, q.Stderr = qout, qout
	must(t, q.Start())
	done := make(chan struct{})
	go func() { q.Wait(); close(done) }()
	t.Cleanup(func() { q.Process.Kill(); <-done })
	wait, stop := context.WithTimeout(ctx, 4*time.Minute)
	defer stop()
	if err := bootkit.WaitForMarker(wait, serial, marker, done); err != nil {
		b, _ := os.ReadFile(serial)
		t.Fatalf("booting the CD (%s): %v\nserial:\n%s\nqemu: %s", fw, err, b, qout)
	}
	b, _ := os.ReadFile(serial)
	if !strings.Contains(string(b), "metal.check=iso-cmdline") {
		t.Errorf("the kernel's command line is not the image's:\n%s", b)
	}
}

func TestRefusesCmdline(t *testing.T) {
	tl := iso.Tools{Xorriso: "/nonexistent"}
	for name, c := range map[string]string{
		"newline": "console=ttyS0\ndefault evil",
		"long":    strings.Repeat("a", 2000),
	} {
		t.Run(name, func(t *testing.T) {
			err := tl.Build(context.Background(), iso.Spec{Kernel: "/k", Cmdline: c}, filepath.Join(t.TempDir(), "x.iso"))
			if err == nil || !strings.Contains(err.Error(), "command line") {
				t.Errorf("Build: %v, want a command line refused", err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
