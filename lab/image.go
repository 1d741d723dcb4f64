package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/metal-dev/metal/images/initramfs"
	"github.com/metal-dev/metal/internal/bootdisk"
)

// Marker is what the lab's disk image prints on the serial console when a
// VM boots it: the proof that the VM was provisioned and boots its disk.
const Marker = "metal-lab-booted-from-disk"

// PhonedHome is what the lab's disk image prints once metal accepted its
// phone-home.
const PhonedHome = "metal-lab-phoned-home"

// imageModules are what the lab's OS loads to read its own disk (the seed)
// and reach metal: virtio disk and NIC, FAT and its code pages.
var imageModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "vfat", "nls_cp437", "nls_utf8", "nls_ascii", "nls_iso8859_1"}

// osInit is the lab OS's /init. It stands in for an OS with cloud-init:
// it prints Marker, reads the phone-home URL from the NoCloud seed metal's
// agent wrote on its disk (var/lib/cloud/seed/nocloud/vendor-data on the
// FAT partition, whose /etc/cloud marks it as a cloud-init root), takes
// the seed's fixed addresses (network-config) and an address by DHCP,
// and posts to the URL as cloud-init's phone_home does; then it powers
// off. It phones home only when it really booted
// from its disk: the seed is only there.
const osInit = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t devtmpfs devtmpfs /dev 2>/dev/null
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
exec >/dev/console 2>&1
for m in $($B cat /modules.order); do $B insmod /lib/modules/$m 2>/dev/null; done
$B echo
$B echo ` + Marker + `
$B mkdir -p /mnt
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda1 ] && break; $B sleep 1; done
url=""
net=""
if $B mount -t vfat -o ro /dev/vda1 /mnt; then
  url=$($B sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' /mnt/var/lib/cloud/seed/nocloud/vendor-data 2>/dev/null)
  net=$($B cat /mnt/var/lib/cloud/seed/nocloud/network-config 2>/dev/null)
  $B umount /mnt
fi
if [ -n "$url" ]; then
  $B ifconfig eth0 up
  # The fixed addresses and gateway of the seed's network-config, as
  # cloud-init applies them: a VM on a segment without DHCP or on an
  # IPv6-only link has no other.
  for a in $($B echo "$net" | $B grep -o '"addresses":\[[^]]*\]' | $B grep -o '"[^"]*/[0-9]*"' | $B tr -d '"'); do
    $B ip addr add "$a" dev eth0
  done
  gw=$($B echo "$net" | $B grep -o '"via":"[0-9.]*"' | $B head -n 1 | $B cut -d '"' -f 4)
  [ -n "$gw" ] && $B ip route add default via "$gw"
  $B udhcpc -i eth0 -q -n -t 10 -T 2 -s /udhcpc.sh
  for i in 1 2 3 4 5 6 7 8 9 10; do
    if $B wget -q -O /dev/null --post-data "instance_id=metal-lab&hostname=lab" "$url"; then
      $B echo ` + PhonedHome + `
      break
    fi
    $B sleep 2
  done
else
  $B echo "metal-lab: no phone-home in the seed"
fi
$B sleep 1
$B poweroff -f
`

// panicInit is the /init of an OS that cannot come up: it exits, and the
// kernel panics ("Attempted to kill init").
const panicInit = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec >/dev/console 2>&1
/bin/busybox echo "metal-lab: this image's init exits"
exit 1
`

const udhcpcScript = `#!/bin/busybox sh
case "$1" in
bound|renew) /bin/busybox ifconfig "$interface" "$ip" netmask "$subnet" up ;;
esac
`

// BuildTestImage writes the lab's disk image to path: a Debian kernel with
// its modules (the install agent's, fetched with apt-get download and
// cached, never installed) and an initramfs whose /init prints Marker,
// phones home to metal with the seed's URL and powers off, bootable by
// SeaBIOS and by OVMF (bootdisk.Write).
func BuildTestImage(ctx context.Context, path string) error {
	return buildImage(ctx, path, osInit, nil)
}

// BuildPanickingImage writes a disk image like BuildTestImage's whose
// kernel panics at boot (its init exits): written and verified like any
// image, it never comes up.
func BuildPanickingImage(ctx context.Context, path string) error {
	return buildImage(ctx, path, panicInit, nil)
}

// buildImage writes the image with init as its /init; with signed, it
// boots through that Secure Boot chain on UEFI (and kernel must be signed:
// Debian's are).
func buildImage(ctx context.Context, path, init string, signed *bootdisk.Signed) error {
	k, err := initramfs.FindKernel(ctx, initramfs.Options{})
	if err != nil {
		return fmt.Errorf("test disk image: %w", err)
	}
	mods, err := initramfs.LoadOrder(k.ModulesDir, imageModules)
	if err != nil {
		return fmt.Errorf("test disk image: %w", err)
	}
	bb, err := os.ReadFile(bootdisk.Busybox)
	if err != nil {
		return fmt.Errorf("test disk image: %w (install the Debian package busybox-static)", err)
	}
	var order []string
	files := []struct {
		name string
		mode cpio.FileMode
		body []byte
	}{
		{"bin", cpio.TypeDir | 0o755, nil}, {"dev", cpio.TypeDir | 0o755, nil},
		{"proc", cpio.TypeDir | 0o755, nil}, {"sys", cpio.TypeDir | 0o755, nil},
		{"lib", cpio.TypeDir | 0o755, nil}, {"lib/modules", cpio.TypeDir | 0o755, nil},
		{"bin/busybox", cpio.TypeReg | 0o755, bb},
		{"bin/sh", cpio.TypeSymlink | 0o777, []byte("busybox")},
		{"init", cpio.TypeReg | 0o755, []byte(init)},
		{"udhcpc.sh", cpio.TypeReg | 0o755, []byte(udhcpcScript)},
	}
	for _, m := range mods {
		name := strings.ReplaceAll(m.Path, "/", "_")
		order = append(order, name)
		files = append(files, struct {
			name string
			mode cpio.FileMode
			body []byte
		}{"lib/modules/" + name, cpio.TypeReg | 0o644, m.Body})
	}
	files = append(files, struct {
		name string
		mode cpio.FileMode
		body []byte
	}{"modules.order", cpio.TypeReg | 0o644, []byte(strings.Join(order, "\n") + "\n")})

	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	for i, f := range files {
		hdr := &cpio.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), ModTime: time.Unix(0, 0), Links: 1, Inode: int64(i + 1)}
		if f.mode&cpio.ModeType == cpio.TypeSymlink {
			hdr.Linkname = string(f.body)
			hdr.Size = int64(len(f.body))
		}
		if f.mode.IsDir() {
			hdr.Links = 2
		}
		if err := w.WriteHeader(hdr); err != nil {
			return fmt.Errorf("test disk image: cpio %s: %w", f.name, err)
		}
		if _, err := w.Write(f.body); err != nil {
			return fmt.Errorf("test disk image: cpio %s: %w", f.name, err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("test disk image: cpio: %w", err)
	}
	tmp := path + ".tmp"
	write := bootdisk.Write
	if signed != nil {
		write = func(ctx context.Context, kernel string, initrd []byte, path string) error {
			return bootdisk.WriteSigned(ctx, kernel, initrd, path, *signed)
		}
	}
	if err := write(ctx, k.Vmlinuz, buf.Bytes(), tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("test disk image: %w", err)
	}
	return nil
}
