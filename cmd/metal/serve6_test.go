package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// TestServeHTTPBootIPv6 is UEFI HTTP boot on an IPv6-only link served by
// `metal serve` itself: the site declares the network by subnet6 alone
// and the machine by ip6, and the daemon advertises the prefix, answers
// DHCPv6 with the reservation and the boot URLs, and serves iPXE, the
// machine's script and its image over HTTP on IPv6, from the boot intent
// in its store. OVMF's own HTTPv6 client boots to the image's marker;
// the fetches land in the machine's boot timeline; nothing on the link
// has an IPv4 address.
func TestServeHTTPBootIPv6(t *testing.T) {
	serveBootIPv6(t, "http", "http://[2001:db8:0:1::1]:8080/boot/"+bootfiles.UEFI)
}

// TestServePXEBootIPv6 is UEFI PXE over IPv6 through `metal serve`:
// OVMF's PXEv6 client (client architecture 7 in option 61) gets
// ipxe.efi's tftp://[address]/ URL in option 59, fetches it from metal's
// TFTP server over IPv6, releases its address (answered: EDK2 waits for
// the Reply) as iPXE takes the NIC over, and the chainloaded iPXE asks
// DHCPv6 again and gets its script over HTTP on IPv6, to the image's
// marker. No IPv4 address anywhere.
func TestServePXEBootIPv6(t *testing.T) {
	serveBootIPv6(t, "ipxe", "tftp://[2001:db8:0:1::1]/"+bootfiles.UEFI)
}

// serveBootIPv6 boots an OVMF VM on an IPv6-only lab through `metal
// serve`, the machine declared with boot = path, and checks that DHCPv6
// gave firmwareURL to the firmware.
func serveBootIPv6(t *testing.T, path, firmwareURL string) {
	if err := bootkit.CheckQEMU(bootkit.UEFI); err != nil {
		t.Fatal(err)
	}
	pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	metalBin := buildMetal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kernel, err := bootkit.Kernel(ctx, bootkit.CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Parallel()

	lab := pxetest.NewLab(t)
	lab.IPv6Only()
	netdev := lab.AddTap("tap0")
	dir := t.TempDir()
	mac := pxetest.RandomMAC()
	marker := "metal-serve-ipv6-" + path + "-" + lab.ID()
	kb, err := os.ReadFile(kernel)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "vmlinuz"), kb, 0o644))
	initrd, err := bootkit.Initramfs(marker)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "initrd.cpio"), initrd, 0o644))

	const cmdline = "console=ttyS0 panic=-1 no_timer_check"
	sitePath := filepath.Join(dir, "site.hcl")
	must(t, os.WriteFile(sitePath, []byte(fmt.Sprintf(`
site "v6" {
  state            = "file://state/state.db"
  listen           = ":8080"
  unknown_machines = "ignore"
}
network "lab6" {
  interface = %q
  subnet6   = %q
}
image "live" {
  kernel  = "vmlinuz"
  initrd  = ["initrd.cpio"]
  cmdline = %q
}
machine "vm6" {
  mac   = %q
  ip6   = "2001:db8:0:1::50"
  image = image.live
  boot  = %q
}
`, pxetest.BridgeName, pxetest.LabSubnet6, cmdline, mac, path)), 0o644))
	// The boot intent the converge engine would write.
	statePath := filepath.Join(dir, "state", "state.db")
	withStore(t, statePath, func(ctx context.Context, store inventory.Store) {
		if _, err := store.PutMachine(ctx, inventory.Machine{Name: "vm6", MAC: mac.String(),
			State: inventory.StateProvisioning, Intent: inventory.BootIntent{Action: inventory.BootInstall,
				Kernel: "/images/live/vmlinuz", Initrds: []string{"/images/live/initrd.cpio"}, Cmdline: cmdline}}); err != nil {
			t.Fatal(err)
		}
	})
	srv := lab.NS().Start(metalBin, "serve", "--api-listen", "127.0.0.1:0", "--log-level", "debug", sitePath)

	serial := filepath.Join(dir, "serial.log")
	vm := bootkit.VM{Firmware: bootkit.UEFI, MAC: mac, Serial: serial, Dir: dir, Netdev: netdev,
		HTTPBoot: path == "http", PXE6: path != "http", Accel: qemutest.Accel(t)}
	args, err := vm.Args()
	must(t, err)
	start := time.Now()
	qemu := lab.NS().Start("qemu-system-x86_64", args...)
	// OVMF tries HTTP boot over IPv4 before IPv6, and iPXE asks DHCPv4
	// before DHCPv6: each waits out its timeout, minutes under TCG on a
	// loaded host. (OVMF's fw_cfg IPv4Support=n would skip the first
	// wait, but Debian's OVMF then fails its HTTPv6 boot: "Unexpected
	// network error".)
	wait, stopWait := context.WithTimeout(context.Background(), 20*time.Minute)
	defer stopWait()
	if err := bootkit.WaitForMarker(wait, serial, marker, qemu.Done()); err != nil {
		out, _ := os.ReadFile(serial)
		t.Fatalf("IPv6 %s boot through metal serve: %v after %v\nserial console:\n%s\nmetal serve:\n%s",
			path, err, time.Since(start), out, srv.Log())
	}
	t.Logf("power-on to marker in %v", time.Since(start))
	qemu.Stop()
	srv.Stop()

	log := srv.Log()
	const base = "http://[2001:db8:0:1::1]:8080"
	steps := map[string]string{
		"the firmware's URL by DHCPv6":       "boot=" + firmwareURL,
		"the script's URL by DHCPv6 to iPXE": "boot=" + base + "/ipxe/" + mac.String(),
		"the reservation":                    "ip6=2001:db8:0:1::50",
	}
	for step, want := range steps {
		if !strings.Contains(log, want) {
			t.Errorf("metal serve's log has no %s (%s)", step, want)
		}
	}
	if strings.HasPrefix(firmwareURL, "tftp:") {
		if !hasLine(log, `msg="tftp transfer"`, "client=[2001:db8:", "file="+bootfiles.UEFI, "result=ok") {
			t.Errorf("metal serve's log has no transfer of %s over TFTP on IPv6", bootfiles.UEFI)
		}
		// The firmware releases its address as iPXE takes the NIC over,
		// and hangs unless the Release is answered.
		if !hasLine(log, `msg="dhcp6 reply"`, "type=RELEASE", "reply=REPLY") {
			t.Errorf("metal serve's log has no Reply to the firmware's DHCPv6 Release")
		}
	}
	wantBootFetches(t, statePath, "vm6")
	lab.CheckIPv6Only()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// hasLine says whether a line of log holds every one of parts.
func hasLine(log string, parts ...string) bool {
	for line := range strings.Lines(log) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
