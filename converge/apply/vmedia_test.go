package apply_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/images/iso"
	"github.com/metal-dev/metal/internal/bootdisk"
	"github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// TestVirtualMediaInQEMU is virtual media across L3. The machine's NIC is
// on a routed segment (198.51.100.0/24, behind a router namespace) with no
// DHCP server and no relay; metal (DHCP, HTTP, the agent protocol) is on
// 192.0.2.0/24. The engine builds the machine's boot CD (the agent, with
// its static address, gateway, metal's URL and the task's secret on the
// kernel line), and the machine's virtual BMC (Redfish over QEMU) fetches
// it from metal's HTTP server across the router, attaches it and boots it
// once; the agent writes the image over the routed hop and reboots into
// the installed OS, whose marker shows on the serial console. Metal's
// DHCP server never hears of the machine. On SeaBIOS and on OVMF, whose
// virtual CD the BMC makes the first boot device once (OVMF ignores
// QEMU's -boot).
func TestVirtualMediaInQEMU(t *testing.T) {
	testenv.Root(t, "network namespaces and QEMU")
	pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	t.Parallel()
	for name, fw := range map[string]bootkit.Firmware{"bios": bootkit.BIOS, "uefi": bootkit.UEFI} {
		t.Run(name, func(t *testing.T) { virtualMediaInQEMU(t, fw) })
	}
}

func virtualMediaInQEMU(t *testing.T, fw bootkit.Firmware) {
	if err := bootkit.CheckQEMU(fw); err != nil {
		t.Fatal(err)
	}
	if err := bootdisk.CheckTools(); err != nil {
		t.Fatal(err)
	}
	tools, err := iso.FindTools()
	if err != nil {
		t.Fatal(err)
	}
	t.Parallel()
	l := newQEMULab(t, 12*time.Minute)
	ctx := l.ctx

	// The image: the test disk.
	marker := "metal-vmedia-installed"
	raw := filepath.Join(l.dir, "image.raw")
	must(t, bootkit.DiskImage(ctx, l.res.Kernel, marker, raw))
	diskGz, sum := l.image(raw)

	// The network: metal on the lab's bridge; a router between it and the
	// machine's segment, which has a bridge of its own and no DHCP.
	router := l.lab.AddHost("router", nil)
	router.MustIP("addr", "add", "192.0.2.254/24", "dev", "eth0")
	l.lab.AddBridge(router, "seg", "198.51.100.1/24")
	router.MustIP("tuntap", "add", "tap0", "mode", "tap")
	router.MustIP("link", "set", "tap0", "master", "seg", "up")
	if out, err := router.Command(ctx, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("router: %v: %s", err, out)
	}
	l.lab.NS().MustIP("route", "add", "198.51.100.0/24", "via", "192.0.2.254")

	// The machine: QEMU in the router's namespace on the segment, started
	// by the virtual BMC. No option ROM: the BMC's boot override alone
	// says CD or disk.
	qargs := append(qemu.BaseArgs(qemutest.Accel(t), 768), "-serial", "file:"+l.serial,
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,romfile=,mac="+l.mac.String(),
		"-device", "virtio-rng-pci")
	if fw == bootkit.UEFI {
		// OVMF boots by bootindex alone: the disk is next after the CD
		// the BMC puts first for one boot.
		vars := filepath.Join(l.dir, "vars.fd")
		must(t, qemu.NewOVMFVars(vars))
		qargs = append(qargs, qemu.UEFIArgs(vars)...)
		qargs = append(qargs, "-drive", "file="+l.disk+",format=raw,if=none,id=d0,cache=unsafe",
			"-device", "virtio-blk-pci,drive=d0,bootindex=1")
	} else {
		qargs = append(qargs, "-drive", "file="+l.disk+",format=raw,if=virtio,cache=unsafe")
	}
	l.machine(router.Name, qargs)

	media := iso.Media{Tools: tools, Dir: filepath.Join(l.files, "media"), URL: l.httpBase + "/files/media",
		Kernel: l.res.Kernel, Initrds: []string{filepath.Join(l.files, "agent", "initrd.img")}}
	l.apply(`site "vmedia" {}

network "far" {
  subnet  = "198.51.100.0/24"
  gateway = "198.51.100.1"
  mode    = "off"
}

image "os" {
  disk     = "file://`+diskGz+`"
  checksum = "sha256:`+sum+`"
  ready    = "none"
}

machine "vm-1" {
  mac     = "%[1]s"
  ip      = "198.51.100.50"
  network = "far"
  image   = image.os
  boot    = "virtual-media"
`+bmcBlock+`
}

rollout {
  canary  = 0
  stagger = "0s"
}
`, apply.Options{Media: media.Build})

	// The agent rebooted the machine; the engine set its next boot to the
	// disk, which holds the image now.
	wait, stop := context.WithTimeout(ctx, 4*time.Minute)
	defer stop()
	if err := bootkit.WaitForMarker(wait, l.serial, marker, nil); err != nil {
		t.Fatalf("the installed OS: %v", err)
	}

	out, _ := os.ReadFile(l.serial)
	for _, want := range []string{"metal.ip=198.51.100.50/24", "metal.gw=198.51.100.1", "ip=198.51.100.50"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("serial console: no %q", want)
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "agent=metal") && strings.Contains(strings.ToLower(line), "dhcp") {
			t.Errorf("the agent tried DHCP: %s", line)
		}
	}
	for _, line := range strings.Split(l.logs.String(), "\n") {
		if strings.Contains(line, `"test":"dhcp"`) && strings.Contains(strings.ToLower(line), l.mac.String()) {
			t.Errorf("metal's DHCP heard of the machine: %s", line)
		}
	}
	m, err := l.store.Machine(ctx, "vm-1")
	must(t, err)
	if m.State != inventory.StateProvisioned {
		t.Errorf("state %s, want provisioned", m.State)
	}
	if !strings.Contains(l.logs.String(), `"path":"/files/media/vm-1-`) {
		t.Errorf("no log of the BMC fetching the CD from metal's HTTP server")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
