package bootkit_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/bootdisk"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// TestDiskImageBoots boots the test disk image straight from a virtio
// disk, on SeaBIOS (SYSLINUX) and on OVMF (systemd-boot), to its marker;
// and its signed build on OVMF with Secure Boot on (shim, GRUB, Debian's
// signed kernel), whose kernel says Secure Boot is on.
func TestDiskImageBoots(t *testing.T) {
	pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	if err := bootdisk.CheckTools(); err != nil {
		t.Fatal(err)
	}
	// Parallel subtests run after this function returns: cancel at cleanup.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	kernel, err := bootkit.Kernel(ctx, bootkit.CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	signedDir, err := bootkit.SecureBootDir(ctx, bootkit.CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, fw := range []bootkit.Firmware{bootkit.BIOS, bootkit.UEFI, bootkit.UEFISecure} {
		t.Run(string(fw), func(t *testing.T) {
			t.Parallel()
			if err := bootkit.CheckQEMU(fw); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			marker := "metal-disk-boot-" + string(fw) + "-ok"
			disk := filepath.Join(dir, "disk.raw")
			write := bootkit.DiskImage
			if fw == bootkit.UEFISecure {
				write = func(ctx context.Context, kernel, marker, disk string) error {
					return bootkit.SignedDiskImage(ctx, kernel, marker, disk, signedDir)
				}
			}
			if err := write(ctx, kernel, marker, disk); err != nil {
				t.Fatal(err)
			}
			serial := filepath.Join(dir, "serial.log")
			args, err := bootkit.DiskBootArgs(fw, qemutest.Accel(t), disk, serial, dir)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
			out := &syncbuf.Buffer{}
			cmd.Stdout, cmd.Stderr = out, out
			// Pdeathsig: no QEMU outlives a test binary killed at its timeout.
			child, err := testenv.StartChild(cmd)
			if err != nil {
				t.Fatal(err)
			}
			done := child.Done()
			defer func() { cmd.Process.Kill(); <-done }()
			wait, stop := context.WithTimeout(ctx, 3*time.Minute)
			defer stop()
			if err := bootkit.WaitForMarker(wait, serial, marker, done); err != nil {
				log, _ := os.ReadFile(serial)
				t.Fatalf("%v\nserial:\n%s\nqemu: %s", err, log, out.String())
			}
			if log, _ := os.ReadFile(serial); fw == bootkit.UEFISecure && !bytes.Contains(log, []byte("Secure boot enabled")) {
				t.Errorf("the kernel did not say \"Secure boot enabled\":\n%s", log)
			}
		})
	}
}
