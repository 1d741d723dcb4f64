package apply_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// TestRAIDVolumeInQEMU: a RAID volume the site declares reaches the
// machine's Linux. vm-1 has no disk of its own: its virtual BMC reports
// two 1 GiB drives, and the engine builds a RAID1 volume of them over
// Redfish before it powers the machine on; the BMC gives QEMU the volume
// as a disk on a virtio-scsi controller, as a RAID controller presents a
// logical drive. The install agent's kernel finds it in /sys/block (the
// volume's serial and 1 GiB, in the hardware the agent reports to the
// store), writes the image to it, and the machine boots the installed OS
// from the volume.
func TestRAIDVolumeInQEMU(t *testing.T) {
	requireQEMULab(t, bootkit.BIOS)
	l := newQEMULab(t, 15*time.Minute)
	hw := virtual.DefaultHardware(virtual.MachineSpec{Name: "vm-1"})
	hw.Drives = []virtual.Drive{
		{Model: "QEMU HARDDISK", Serial: "raid-d0", Bytes: 1 << 30, Media: "SSD", Protocol: "SATA", Health: "OK"},
		{Model: "QEMU HARDDISK", Serial: "raid-d1", Bytes: 1 << 30, Media: "SSD", Protocol: "SATA", Health: "OK"},
	}
	l.hardware, l.volumes = &hw, filepath.Join(l.dir, "volumes")

	marker := "metal-raid-installed"
	raw := filepath.Join(l.dir, "image.raw")
	must(t, bootkit.DiskImage(l.ctx, l.res.Kernel, marker, raw))
	diskGz, sum := l.image(raw)

	// SeaBIOS netboots with the NIC's iPXE; no disk but the volume.
	args, err := bootkit.VM{Firmware: bootkit.BIOS, MAC: l.mac, Serial: l.serial, Dir: l.dir,
		MemoryMiB: 768, Accel: qemutest.Accel(t), Netdev: l.tap()}.Args()
	must(t, err)
	// The agent reboots the machine into its installed OS: QEMU goes on.
	args = slices.DeleteFunc(args, func(a string) bool { return a == "-no-reboot" })
	l.machine(l.lab.NS().Name, append(args, "-device", "virtio-rng-pci"))

	l.apply(labSite("raid", diskGz, sum, `  raid "system" {
    level = "RAID1"
    count = 2
  }
`), apply.Options{})

	// What the agent's kernel saw, as it reported it.
	m, err := l.store.Machine(l.ctx, "vm-1")
	must(t, err)
	if m.Hardware == nil {
		t.Fatal("the agent reported no hardware")
	}
	var seen []string
	volume := -1
	for i, d := range m.Hardware.Disks {
		seen = append(seen, d.Name+" "+d.Serial)
		if strings.HasPrefix(d.Serial, "metal-volume-") {
			volume = i
		}
	}
	if volume < 0 {
		t.Fatalf("the agent's kernel did not see the RAID volume; its disks: %v", seen)
	}
	if d := m.Hardware.Disks[volume]; d.SizeBytes != 1<<30 {
		t.Errorf("the volume's disk %s (%s) holds %d bytes in Linux; want the RAID1's 1 GiB", d.Name, d.Serial, d.SizeBytes)
	}
	t.Logf("the agent's disks: %v", seen)

	// The image is on the volume's disk, as the BMC keeps it.
	files, err := filepath.Glob(filepath.Join(l.volumes, "vm-1-volume-*.raw"))
	must(t, err)
	if len(files) != 1 {
		t.Fatalf("volume disks %v, want one", files)
	}
	want, err := os.ReadFile(raw)
	must(t, err)
	got := make([]byte, min(len(want), 1<<20))
	f, err := os.Open(files[0])
	must(t, err)
	_, err = f.ReadAt(got, 0)
	f.Close()
	must(t, err)
	if !bytes.Equal(got, want[:len(got)]) {
		t.Errorf("the volume's disk %s does not start with the image", files[0])
	}

	// Rebooted by the agent, the machine boots its OS from the volume.
	wait, stop := context.WithTimeout(l.ctx, 5*time.Minute)
	defer stop()
	if err := bootkit.WaitForMarker(wait, l.serial, marker, nil); err != nil {
		t.Fatalf("the installed OS on the volume: %v", err)
	}
}
