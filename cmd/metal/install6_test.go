package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/images/initramfs"
	"github.com/metal-dev/metal/internal/bootdisk"
	"github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// The IPv6-only install's machine, on the lab's link, and its BMC, on a
// management prefix of its own (on the same bridge: metal serve takes
// its address on the link from the provisioning subnet).
const (
	install6IP  = "2001:db8:0:1::50"
	install6BMC = "2001:db8:0:3::2"
)

// TestServeInstallIPv6 provisions a UEFI machine end to end on an
// IPv6-only link, with metal serve and metal apply as an operator runs
// them: apply powers the VM on through its Redfish BMC (metal vbmc, on
// IPv6 too); OVMF's PXE client takes its reserved address by DHCPv6 and
// fetches ipxe.efi by TFTP over IPv6; iPXE gets its script, the agent's
// kernel and initramfs over HTTP on IPv6; the agent takes the
// reservation by DHCPv6, writes the image and its NoCloud seed, and
// reboots into the installed OS. That OS, as cloud-init would, puts the
// IPv6 address of the seed's network-config on its NIC and phones home
// from it: only then is the machine provisioned. Nothing on the link has
// an IPv4 address.
func TestServeInstallIPv6(t *testing.T) {
	metalBin := buildMetal(t)
	if err := bootkit.CheckQEMU(bootkit.UEFI); err != nil {
		t.Fatal(err)
	}
	if err := bootdisk.CheckTools(); err != nil {
		t.Fatal(err)
	}
	pxetest.RequireTool(t, "curl", "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	// metal serve builds the agent inside the namespace, which has no way
	// out: its kernel is fetched here first, into the cache serve reads.
	kernel, err := initramfs.FindKernel(ctx, initramfs.Options{})
	must(t, err)
	t.Parallel()

	dir := t.TempDir()
	const marker, phoned = "metal-installed-ipv6-os-boots", "metal-ipv6-os-phoned-home"
	image := filepath.Join(dir, "os6.raw")
	must(t, ipv6OSImage(ctx, kernel, marker, phoned, image))
	sum := fileSum(t, image)

	lab := pxetest.NewLab(t)
	lab.IPv6Only()
	lab.NS().MustIP("addr", "add", install6BMC+"/64", "dev", pxetest.BridgeName, "nodad")
	netdev := lab.AddTap("tap0")
	mac := pxetest.RandomMAC()
	serial := filepath.Join(dir, "serial.log")
	disk := filepath.Join(dir, "vda.raw")
	must(t, os.WriteFile(disk, nil, 0o644))
	must(t, os.Truncate(disk, 64<<20))
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	must(t, qemu.NewOVMFVars(vars))

	// The VM as its BMC starts it. OVMF boots the disk first (blank, it
	// falls through to the NIC; installed, it boots), as the lab's UEFI
	// VM does, and its PXE client is on IPv6 alone. No argument holds a
	// space: vbmc splits qemu-cmd on spaces.
	vm := append([]string{qemu.Program}, qemu.BaseArgs(qemutest.Accel(t), 768)...)
	vm = append(vm,
		"-chardev", "file,id=ser0,path="+serial+",append=on", "-serial", "chardev:ser0",
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=n0,mac="+mac.String()+",romfile=,bootindex=2",
		"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
		"-drive", "file="+disk+",format=raw,if=none,id=d0,cache=unsafe",
		"-device", "virtio-blk-pci,drive=d0,serial=metal-disk-0,bootindex=1",
		"-device", "virtio-rng-pci")
	vm = append(vm, qemu.UEFIArgs(vars)...)
	pwFile := filepath.Join(dir, "bmc.pw")
	const password = "vbmc-ipv6-3141"
	must(t, os.WriteFile(pwFile, []byte(password), 0o600))
	bmcAddr := "[" + install6BMC + "]:8000"
	vbmc := lab.NS().Start(metalBin, "vbmc", "--listen", bmcAddr, "--user", "admin", "--password-file", pwFile,
		"--machine", "name=vm6,qmp="+filepath.Join(dir, "qmp.sock")+",mac="+mac.String()+",qemu-cmd="+strings.Join(vm, " "))
	waitHTTP(t, lab.NS(), "http://"+bmcAddr+"/redfish/v1/", vbmc)

	sitePath := filepath.Join(dir, "site.hcl")
	must(t, os.WriteFile(sitePath, []byte(fmt.Sprintf(`
site "v6" {
  state  = "file://state/metal.db"
  listen = ":8080"
}
network "lab6" {
  interface = %q
  subnet6   = %q
}
image "os6" {
  disk          = "os6.raw"
  checksum      = %q
  ready_timeout = "30m"
}
machine "vm6" {
  mac   = %q
  ip6   = %q
  image = image.os6
  power = "on"
  disk  = "/dev/vda"
  bmc {
    protocol = "redfish"
    address  = "http://%s"
    username = "admin"
    password = %q
  }
}
rollout {
  canary       = 0
  batch_size   = 1
  max_failures = 0
}
`, pxetest.BridgeName, pxetest.LabSubnet6, sum, mac, install6IP, bmcAddr, password)), 0o644))

	srv := lab.NS().Start(metalBin, "serve", "--api-listen", "[::1]:0", "--log-level", "debug", sitePath)
	const base = "http://[2001:db8:0:1::1]:8080"
	waitHTTP(t, lab.NS(), base+"/", srv)

	// Under TCG on a loaded host every step is slow: OVMF, iPXE's
	// DHCPv4 before its DHCPv6 (it waits its timeout out), the agent's
	// kernel, the installed OS's first boot.
	start := time.Now()
	apply := lab.NS().Command(ctx, metalBin, "apply", "--auto-approve", "--boot-timeout", "20m", "--agent-timeout", "30m", sitePath)
	out, err := apply.CombinedOutput()
	console, _ := os.ReadFile(serial)
	if err != nil {
		t.Fatalf("metal apply over IPv6: %v after %v\n%s\nserial console:\n%s\nmetal serve:\n%s\nvbmc:\n%s",
			err, time.Since(start), out, console, srv.Log(), vbmc.Log())
	}
	t.Logf("metal apply: provisioned in %v", time.Since(start))
	// metal took the phone-home; the OS says so once its post returns.
	wait, stopWait := context.WithTimeout(ctx, 2*time.Minute)
	defer stopWait()
	err = bootkit.WaitForMarker(wait, serial, phoned, nil)
	console, _ = os.ReadFile(serial)
	if err != nil {
		t.Errorf("the installed OS: %v", err)
	}
	for _, want := range []string{marker, "metal-os: address " + install6IP + "/64"} {
		if !strings.Contains(string(console), want) {
			t.Errorf("the serial console has no %q", want)
		}
	}
	if t.Failed() {
		t.Fatalf("serial console:\n%s", console)
	}
	srv.Stop()
	vbmc.Stop()

	log := srv.Log()
	steps := map[string]string{
		"ipxe.efi's URL by DHCPv6":           "boot=tftp://[2001:db8:0:1::1]/" + bootfiles.UEFI,
		"the script's URL by DHCPv6 to iPXE": "boot=" + base + "/ipxe/" + mac.String(),
		"the reservation":                    "ip6=" + install6IP,
	}
	for step, want := range steps {
		if !strings.Contains(log, want) {
			t.Errorf("metal serve's log has no %s (%s)", step, want)
		}
	}
	if !hasLine(log, `msg="tftp transfer"`, "client=[2001:db8:", "file="+bootfiles.UEFI, "result=ok") {
		t.Errorf("metal serve's log has no transfer of %s over TFTP on IPv6", bootfiles.UEFI)
	}
	if !hasLine(log, `msg="installed OS reported ready"`, "from="+install6IP) {
		t.Errorf("metal serve's log has no phone-home from %s", install6IP)
	}
	withStore(t, filepath.Join(dir, "state", "metal.db"), func(ctx context.Context, store inventory.Store) {
		m, err := store.Machine(ctx, "vm6")
		must(t, err)
		if m.State != inventory.StateProvisioned || m.Ready == nil || m.Ready.From != install6IP {
			t.Errorf("vm6 is %s, ready %+v: want provisioned, phoned home from %s", m.State, m.Ready, install6IP)
		}
	})
	netcfg, err := exec.Command("mtype", "-i", disk+"@@1M", "::/var/lib/cloud/seed/nocloud/network-config").CombinedOutput()
	if err != nil || !strings.Contains(string(netcfg), `"addresses":["`+install6IP+`/64"]`) {
		t.Errorf("the seed's network-config: %v\n%s", err, netcfg)
	}
	lab.CheckIPv6Only()
}

// ipv6OSImage writes a disk image whose OS prints marker and then does
// on an IPv6-only link what cloud-init does with metal's NoCloud seed:
// puts the address of the seed's network-config on its NIC and posts to
// the phone-home URL of its vendor-data, printing phoned once metal took
// it; then it powers off.
func ipv6OSImage(ctx context.Context, k initramfs.Kernel, marker, phoned, path string) error {
	mods, err := initramfs.LoadOrder(k.ModulesDir, []string{"virtio_pci", "virtio_blk", "virtio_net", "vfat", "nls_cp437", "nls_utf8", "nls_ascii", "nls_iso8859_1"})
	if err != nil {
		return err
	}
	var files []bootkit.File
	for i, m := range mods {
		files = append(files, bootkit.File{Name: fmt.Sprintf("modules/%02d-%s", i, filepath.Base(m.Path)), Body: m.Body})
	}
	initrd, err := bootkit.ScriptInitramfs(marker, files,
		`B=/bin/busybox`,
		`for m in /modules/*; do $B insmod $m; done`,
		`$B mount -t sysfs sysfs /sys`,
		`for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do [ -b /dev/vda1 ] && break; $B sleep 1; done`,
		`$B mkdir -p /mnt && $B mount -t vfat -o ro /dev/vda1 /mnt`,
		`seed=/mnt/var/lib/cloud/seed/nocloud`,
		`url=$($B sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' $seed/vendor-data)`,
		`addr=$($B sed -n 's/.*"addresses":\["\([^"]*\)".*/\1/p' $seed/network-config)`,
		`$B umount /mnt`,
		`$B echo "metal-os: address $addr"`,
		`$B ip link set eth0 up`,
		`$B ip -6 addr add $addr dev eth0`,
		// cloud-init phones home in its last stage, its address long up;
		// posted while the address is still tentative, it would go from
		// the link-local one.
		`for i in 1 2 3 4 5 6 7 8 9 10; do $B ip -6 addr show dev eth0 | $B grep -q tentative || break; $B sleep 1; done`,
		`for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do`,
		`  if $B wget -q -O /dev/null --post-data "instance_id=vm6&hostname=vm6" "$url"; then $B echo `+phoned+`; break; fi`,
		`  $B sleep 2`,
		`done`,
		`$B sleep 1`,
		`$B poweroff -f`,
	)
	if err != nil {
		return err
	}
	return bootdisk.Write(ctx, k.Vmlinuz, initrd, path)
}

// waitHTTP waits until url answers at all from inside ns, while p runs.
func waitHTTP(t *testing.T, ns *pxetest.Netns, url string, p *pxetest.Process) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if code := httpCode(t, ns, url); code != "000" {
			return
		}
		select {
		case <-p.Done():
			t.Fatalf("%s exited before %s answered:\n%s", filepath.Base(url), url, p.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within 5 minutes:\n%s", url, p.Log())
		}
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
