package apply_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/grub"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
	"github.com/metal-dev/metal/pxe/tftp"
	"github.com/metal-dev/metal/site"
)

// TestSecureBootLearnedInQEMU: the site says nothing of Secure Boot; the
// machine is a QEMU with OVMF's Secure Boot build and Microsoft's keys
// enrolled, behind the virtual BMC, whose SecureBoot resource reads the
// machine's own UEFI variable store. The engine asks it, learns Secure
// Boot is on, and the netboot servers send the machine the signed chain
// (shim, GRUB, its GRUB config, Debian's signed kernel with the agent)
// and never iPXE, though they have it; the agent installs, and the
// installed OS boots with Secure Boot still on.
func TestSecureBootLearnedInQEMU(t *testing.T) {
	requireQEMULab(t, bootkit.UEFISecure)
	l := newQEMULab(t, 15*time.Minute)
	signed, err := bootkit.SecureBootDir(l.ctx, bootkit.CacheDir())
	must(t, err)
	chain, err := bootfiles.FindSecureBoot(signed)
	must(t, err)
	ipxe, err := bootfiles.FindIPXE("")
	must(t, err)

	// The image: a disk that boots through the same signed chain.
	marker := "metal-secure-boot-learned"
	raw := filepath.Join(l.dir, "image.raw")
	must(t, bootkit.SignedDiskImage(l.ctx, l.res.Kernel, marker, raw, signed))
	diskGz, sum := l.image(raw)

	// TFTP: the signed chain beside iPXE, as metal serve has them, GRUB's
	// generated configs and the files by their HTTP paths.
	tftpSrv, err := tftp.New(tftp.Config{Addr: pxetest.ServerIP.String() + ":69",
		IPXE: bootfiles.Join(ipxe, chain), Mounts: map[string]*bootfiles.Root{"files": l.root},
		Generated: grub.Configs{Policy: l.policy, Leases: l.dhcp.Leases()}, Logger: l.log.With("test", "tftp")})
	must(t, err)
	l.servers["tftp"] = tftpSrv.Serve

	// The machine: OVMF's own PXE client first, then its disk.
	args, err := bootkit.VM{Firmware: bootkit.UEFI, NoROM: true, SecureBoot: true, MAC: l.mac, Serial: l.serial, Dir: l.dir,
		MemoryMiB: 768, Accel: qemutest.Accel(t), Netdev: l.tap()}.Args()
	must(t, err)
	// The agent reboots the machine into its installed OS: QEMU goes on.
	args = slices.DeleteFunc(args, func(a string) bool { return a == "-no-reboot" })
	args = append(append(args, "-device", "virtio-rng-pci"), bootkit.DiskArgs(l.disk)...)
	l.machine(l.lab.NS().Name, args)

	l.apply(labSite("sb", diskGz, sum, ""), apply.Options{SecureBootChain: true})
	m, err := l.store.Machine(l.ctx, "vm-1")
	must(t, err)
	if m.FirmwareSecureBoot == nil || !*m.FirmwareSecureBoot || m.BootPath() != site.BootSecure {
		t.Errorf("store: firmware Secure Boot %v, boot path %q; want learned on, the signed chain", m.FirmwareSecureBoot, m.BootPath())
	}

	// Rebooted by the agent, GRUB is told to boot locally and chainloads
	// the disk's shim.
	if err := bootkit.WaitForMarker(l.ctx, l.serial, marker, nil); err != nil {
		t.Fatalf("the installed OS: %v", err)
	}
	out, _ := os.ReadFile(l.serial)
	if n := bytes.Count(out, []byte("Secure boot enabled")); n < 2 {
		t.Errorf("the kernel said \"Secure boot enabled\" %d times; want the agent's and the installed OS's", n)
	}
	var offered []string
	for _, line := range strings.Split(l.logs.String(), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil || e["test"] != "dhcp" {
			continue
		}
		if f, ok := e["boot"].(string); ok && f != "" {
			offered = append(offered, f)
		}
	}
	if len(offered) == 0 {
		t.Error("metal's DHCP offered no boot file")
	}
	for _, f := range offered {
		if f != bootfiles.Shim {
			t.Errorf("metal's DHCP offered %q to a Secure Boot machine; want only %s", f, bootfiles.Shim)
		}
	}
}
