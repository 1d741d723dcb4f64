package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metal-dev/metal/images/initramfs"
	"github.com/metal-dev/metal/internal/bootdisk"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/dhcp"
	"github.com/metal-dev/metal/pxe/dhcp6"
	"github.com/metal-dev/metal/pxe/grub"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
	"github.com/metal-dev/metal/pxe/ra"
	"github.com/metal-dev/metal/pxe/storeagent"
	"github.com/metal-dev/metal/pxe/storepolicy"
	"github.com/metal-dev/metal/pxe/tftp"
)

func sha256sum(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestInstallInQEMU is issue 8's end-to-end proof. In a lab namespace, a
// QEMU machine (SeaBIOS, TCG) with an empty disk net-boots the agent
// initramfs (metal's static binary as /init with the Debian cloud kernel's
// virtio modules) from metal's own DHCP and HTTP servers, whose boot
// policy reads the inventory store the test writes an install intent
// into. The agent reports its facts, writes the gzip'd, checksummed test
// disk image, seeds cloud-init and reboots. The test then sets the intent
// to local: the machine boots from its disk to the image's marker. A
// second install of a corrupted copy ends in failed with the checksum
// error.
func TestInstallInQEMU(t *testing.T) {
	if err := bootdisk.CheckTools(); err != nil {
		t.Skip(err)
	}
	al := newAgentLab(t, 8*time.Minute, "virtio_blk", "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8")
	ctx, store, policy, mac, dir, res, files := al.ctx, al.store, al.policy, al.mac, al.dir, al.res, al.files

	// The image: the test disk, gzip'd, and a corrupted copy.
	marker := "metal-installed-disk-boots"
	raw := filepath.Join(dir, "image.raw")
	must(t, bootkit.DiskImage(ctx, res.Kernel, marker, raw))
	rb, good, err := bootkit.GzipFile(raw)
	must(t, err)
	bad := append([]byte(nil), good...)
	bad[len(bad)/3] ^= 0x55
	must(t, os.WriteFile(filepath.Join(files, "disk.raw.gz"), good, 0o644))
	must(t, os.WriteFile(filepath.Join(files, "corrupt.raw.gz"), bad, 0o644))
	install := func(id, image, checksum string) {
		t.Helper()
		al.give(inventory.AgentTask{ID: id, Kind: inventory.TaskInstall, Image: "test",
			ImageURL: "/files/" + image, Format: "gz", Checksum: checksum, Hostname: "vm-1",
			SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest metal@test"},
			Secret:            inventory.NewTaskSecret()})
	}
	install("t1", "disk.raw.gz", sha256sum(good))

	disk := filepath.Join(dir, "vda.raw")
	must(t, os.WriteFile(disk, nil, 0o644))
	must(t, os.Truncate(disk, 64<<20))
	boot := func(serial string) *pxetest.Process { return al.boot(serial, bootkit.DiskArgs(disk)...) }
	fail := al.fail

	// 1. Install: the agent writes the image and reboots (QEMU runs with
	// -no-reboot, so the reboot ends the process).
	serial1 := filepath.Join(dir, "install.log")
	start := time.Now()
	q := boot(serial1)
	select {
	case <-q.Done():
	case <-time.After(4 * time.Minute):
		q.Stop()
		fail(serial1, q, "install did not end within 4 minutes")
	}
	t.Logf("install: power-on to reboot in %v", time.Since(start))
	m, err := store.Machine(ctx, "vm-1")
	must(t, err)
	if m.Agent == nil || m.Agent.TaskID != "t1" || m.Agent.Phase != inventory.AgentDone {
		fail(serial1, q, "after the install the agent status is %+v, want t1 done", m.Agent)
	}
	if m.Hardware == nil {
		fail(serial1, q, "no hardware facts")
	}
	var sawDisk, sawNIC bool
	for _, d := range m.Hardware.Disks {
		sawDisk = sawDisk || (d.Name == "vda" && d.SizeBytes == 64<<20 && d.Serial == "metal-disk-0")
	}
	for _, n := range m.Hardware.NICs {
		sawNIC = sawNIC || n.MAC == mac.String()
	}
	if !sawDisk || !sawNIC {
		t.Errorf("facts %+v: want disk vda of 64 MiB (serial metal-disk-0) and a NIC with MAC %s", m.Hardware, mac)
	}
	written, err := os.ReadFile(disk)
	must(t, err)
	// The seed changed files in the FAT partition; the boot code and
	// partition table before it are the image's.
	if !bytes.Equal(written[:1<<20], rb[:1<<20]) {
		t.Errorf("the disk's first MiB differs from the image's")
	}
	meta, err := exec.Command("mtype", "-i", disk+"@@1M", "::/var/lib/cloud/seed/nocloud/meta-data").CombinedOutput()
	if err != nil || !strings.Contains(string(meta), `"local-hostname": "vm-1"`) || !strings.Contains(string(meta), "metal@test") {
		t.Errorf("cloud-init meta-data on the disk: %v\n%s", err, meta)
	}
	evs, _ := store.Events(ctx, inventory.EventQuery{Machine: "vm-1"})
	var timeline []string
	for _, e := range evs {
		if e.Kind == inventory.EventAgent {
			timeline = append(timeline, e.Message)
		}
	}
	if all := strings.Join(timeline, "\n"); !strings.Contains(all, "reported facts") || !strings.Contains(all, "done (rebooting)") {
		t.Errorf("agent timeline:\n%s\nwant facts and done", all)
	}

	// 2. Local boot: the machine's netboot says so, and it boots its disk.
	_, err = inventory.UpdateMachine(ctx, store, "vm-1", func(m *inventory.Machine) error {
		m.Intent = inventory.BootIntent{Action: inventory.BootLocal}
		return nil
	})
	must(t, err)
	waitPolicy(t, ctx, policy, mac, pxe.ActionLocal)
	serial2 := filepath.Join(dir, "local.log")
	q = boot(serial2)
	wait, stop := context.WithTimeout(ctx, 3*time.Minute)
	defer stop()
	if err := bootkit.WaitForMarker(wait, serial2, marker, q.Done()); err != nil {
		q.Stop()
		fail(serial2, q, "booting the installed disk: %v", err)
	}
	q.Stop()

	// 3. A corrupted image: failed, with the checksum error, and the disk
	// no longer boots it.
	install("t2", "corrupt.raw.gz", sha256sum(good))
	waitPolicy(t, ctx, policy, mac, pxe.ActionInstall)
	serial3 := filepath.Join(dir, "corrupt.log")
	q = boot(serial3)
	defer q.Stop()
	ag := al.waitAgent("t2", serial3, q, 4*time.Minute)
	q.Stop()
	if ag.Phase != inventory.AgentFailed || !strings.Contains(ag.Error, "checksum mismatch") ||
		!strings.Contains(ag.Error, sha256sum(good)) || !strings.Contains(ag.Error, sha256sum(bad)) {
		t.Errorf("corrupted image: agent %+v, want failed with a checksum mismatch naming both sums", ag)
	}
}

// TestSecureBootInstallInQEMU is the Secure Boot chain end to end: a
// machine declared boot = "secureboot" with OVMF's Secure Boot build and
// Microsoft's keys enrolled netboots, all over TFTP, Debian's signed shim,
// its signed network GRUB, the GRUB config metal makes for it (with the
// task's one-time secret) and Debian's signed kernel with the agent's
// initramfs; the agent writes a disk image that boots through the same
// signed chain (shim, disk GRUB, kernel) and reboots. Told to boot
// locally, GRUB hands back to the firmware, which boots the disk: its
// kernel says Secure Boot is still on and the image prints its marker.
func TestSecureBootInstallInQEMU(t *testing.T) {
	testenv.Long(t, "netboots and installs under Secure Boot in QEMU")
	if err := bootdisk.CheckTools(); err != nil {
		t.Skip(err)
	}
	al := newAgentLabSigned(t, 20*time.Minute, true, "virtio_blk", "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8")
	ctx, dir := al.ctx, al.dir
	marker := "metal-secure-boot-installed"
	raw := filepath.Join(dir, "image.raw")
	must(t, bootkit.SignedDiskImage(ctx, al.res.Kernel, marker, raw, al.signed))
	_, gz, err := bootkit.GzipFile(raw)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(al.files, "disk.raw.gz"), gz, 0o644))
	al.give(inventory.AgentTask{ID: "s1", Kind: inventory.TaskInstall, Image: "test",
		ImageURL: "/files/disk.raw.gz", Format: "gz", Checksum: sha256sum(gz), Hostname: "vm-1",
		Secret: inventory.NewTaskSecret()})
	disk := filepath.Join(dir, "vda.raw")
	must(t, os.WriteFile(disk, nil, 0o644))
	must(t, os.Truncate(disk, 64<<20))

	serial1 := filepath.Join(dir, "install.log")
	start := time.Now()
	q := al.boot(serial1, bootkit.DiskArgs(disk)...)
	ag := al.waitAgent("s1", serial1, q, 12*time.Minute)
	select {
	case <-q.Done():
	case <-time.After(time.Minute):
		al.fail(serial1, q, "the agent did not reboot")
	}
	if ag.Phase != inventory.AgentDone {
		al.fail(serial1, q, "install: agent %+v, want done", ag)
	}
	t.Logf("install under Secure Boot: power-on to reboot in %v", time.Since(start))
	if out, _ := os.ReadFile(serial1); !bytes.Contains(out, []byte("Secure boot enabled")) {
		al.fail(serial1, q, "the agent's kernel did not say \"Secure boot enabled\"")
	}

	_, err = inventory.UpdateMachine(ctx, al.store, "vm-1", func(m *inventory.Machine) error {
		m.Intent = inventory.BootIntent{Action: inventory.BootLocal}
		return nil
	})
	must(t, err)
	waitPolicy(t, ctx, al.policy, al.mac, pxe.ActionLocal)
	serial2 := filepath.Join(dir, "local.log")
	q = al.boot(serial2, bootkit.DiskArgs(disk)...)
	defer q.Stop()
	wait, stop := context.WithTimeout(ctx, 5*time.Minute)
	defer stop()
	if err := bootkit.WaitForMarker(wait, serial2, marker, q.Done()); err != nil {
		q.Stop()
		al.fail(serial2, q, "booting the installed disk under Secure Boot: %v", err)
	}
	q.Stop()
	out, _ := os.ReadFile(serial2)
	if !bytes.Contains(out, []byte("Secure boot enabled")) {
		al.fail(serial2, q, "the installed OS's kernel did not say \"Secure boot enabled\"")
	}
	t.Logf("installed disk under Secure Boot: marker after %v", time.Since(start))
}

// agentLab is metal's netboot side (store, store-backed policy, DHCP and
// HTTP with the agent protocol) in a lab namespace, with the agent's
// initramfs built from this tree's metal, for one QEMU machine "vm-1".
type agentLab struct {
	t      *testing.T
	ctx    context.Context
	dir    string
	files  string
	res    initramfs.Result
	store  inventory.Store
	policy *storepolicy.Policy
	lab    *pxetest.Lab
	netdev string // vm-1's NIC: a tap on the lab's bridge
	mac    net.HardwareAddr
	intent inventory.BootIntent
	// signed is the directory of Debian's signed boot chain
	// (bootkit.SecureBootDir) when vm-1 has Secure Boot on: it netboots
	// shim, GRUB, its GRUB config and the agent over TFTP.
	signed string
	// ipv6 makes the lab IPv6-only: metal advertises the link's prefix
	// and answers DHCPv6, and its HTTP server is on IPv6 alone.
	ipv6 bool
}

// lab6Machine is vm-1's address in the IPv6-only agent lab.
var lab6Machine = netip.MustParseAddr("2001:db8:0:1::50")

// newAgentLab skips the test unless it runs as root with QEMU and the
// Debian kernel at hand. modules are the agent's disk drivers, beside
// its NIC's.
func newAgentLab(t *testing.T, timeout time.Duration, modules ...string) *agentLab {
	return newAgentLabWith(t, timeout, false, false, modules...)
}

// newAgentLabSigned is newAgentLab for a vm-1 with Secure Boot on when
// secure is true (boot = "secureboot").
func newAgentLabSigned(t *testing.T, timeout time.Duration, secure bool, modules ...string) *agentLab {
	return newAgentLabWith(t, timeout, secure, false, modules...)
}

// newAgentLabOn is newAgentLab on an IPv6-only link when ipv6 is set.
func newAgentLabOn(t *testing.T, ipv6 bool, timeout time.Duration, modules ...string) *agentLab {
	return newAgentLabWith(t, timeout, false, ipv6, modules...)
}

// newAgentLabWith is the lab of vm-1 with Secure Boot on (secure) or on an
// IPv6-only link (ipv6).
func newAgentLabWith(t *testing.T, timeout time.Duration, secure, ipv6 bool, modules ...string) *agentLab {
	if os.Geteuid() != 0 {
		t.Skip("the QEMU agent tests need root for their network namespace")
	}
	pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	if err := bootkit.CheckQEMU(bootkit.BIOS); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	dir := t.TempDir()
	files := filepath.Join(dir, "files")
	must(t, os.MkdirAll(files, 0o755))

	// The agent: this tree's metal, with the cloud kernel's drivers.
	kroot, err := initramfs.FetchPackage(ctx, bootkit.KernelMeta, bootkit.KernelPackages())
	if err != nil {
		t.Skipf("no Debian kernel package: %v", err)
	}
	bin, err := testenv.BuildMetal(dir)
	must(t, err)
	res, err := initramfs.BuildAgent(ctx, initramfs.Options{
		Binary: bin, KernelDir: kroot, Out: filepath.Join(files, "agent.cpio.gz"),
		Modules: append([]string{"virtio_net", "virtio_pci", "virtio_rng"}, modules...),
	})
	must(t, err)
	kb, err := os.ReadFile(res.Kernel)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(files, "vmlinuz"), kb, 0o644))
	al := &agentLab{t: t, ctx: ctx, dir: dir, files: files, res: res, mac: pxetest.RandomMAC(), ipv6: ipv6}
	if secure {
		if err := bootkit.CheckQEMU(bootkit.UEFISecure); err != nil {
			t.Skip(err)
		}
		if al.signed, err = bootkit.SecureBootDir(ctx, bootkit.CacheDir()); err != nil {
			t.Fatal(err)
		}
	}
	al.start()
	return al
}

// start serves metal's side; files written under al.files later are
// served too.
func (al *agentLab) start() {
	t, ctx, dir := al.t, al.ctx, al.dir
	root, err := bootfiles.OpenRoot(al.files)
	must(t, err)
	t.Cleanup(func() { root.Close() })
	al.lab = pxetest.NewLab(t)
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := inventory.Open(ctx, inventory.NewMemoryKV(), inventory.Options{Logger: log})
	must(t, err)
	t.Cleanup(func() { store.Close() })
	al.store = store
	listen := pxetest.ServerIP.String() + ":8080"
	identity := inventory.Identity{IP: netip.MustParseAddr("192.0.2.50")}
	if al.ipv6 {
		listen = netip.AddrPortFrom(pxetest.ServerIP6, 8080).String()
		identity = inventory.Identity{IP6: lab6Machine}
		al.lab.IPv6Only()
	}
	httpBase := "http://" + listen
	al.intent = inventory.BootIntent{
		Action: inventory.BootInstall, Kernel: "/files/vmlinuz", Initrds: []string{"/files/agent.cpio.gz"},
		Cmdline: "console=ttyS0 panic=-1 no_timer_check metal.url=" + httpBase,
	}
	if al.signed != "" {
		identity.Boot = string(pxe.BootSecure)
	}
	_, err = store.PutMachine(ctx, inventory.Machine{Name: "vm-1", MAC: al.mac.String(), State: inventory.StateReady, Identity: identity})
	must(t, err)

	policy, err := storepolicy.New(ctx, store, storepolicy.Options{Logger: log})
	must(t, err)
	al.policy = policy
	servers := map[string]func(context.Context) error{}
	var leases pxe.Leases
	if al.ipv6 {
		d6, err := dhcp6.New(dhcp6.Config{Interface: pxetest.BridgeName, ServerIP: pxetest.ServerIP6, HTTPBaseURL: httpBase,
			Logger: log.With("test", "dhcp6")}, policy)
		must(t, err)
		adv, err := ra.New(ra.Config{Interface: pxetest.BridgeName, Prefix: pxetest.LabSubnet6, Interval: 3 * time.Second,
			Logger: log.With("test", "ra")})
		must(t, err)
		servers["dhcp6"], servers["ra"], leases = d6.Serve, adv.Serve, d6.Leases()
	} else {
		dhcpSrv, err := dhcp.NewServer(dhcp.Config{
			Interface: pxetest.BridgeName, ServerIP: pxetest.ServerIP,
			Subnets:     []dhcp.Subnet{{CIDR: pxetest.LabSubnet, PoolStart: netip.MustParseAddr("192.0.2.100"), PoolEnd: netip.MustParseAddr("192.0.2.199")}},
			HTTPBaseURL: httpBase,
		}, policy, dhcp.NewFileStore(filepath.Join(dir, "leases.json")), log.With("test", "dhcp"))
		must(t, err)
		servers["dhcp"], leases = dhcpSrv.Serve, dhcpSrv.Leases()
	}
	api, err := storeagent.New(storeagent.Config{Store: store, PollSeconds: 2, Logger: log})
	must(t, err)
	base, _ := url.Parse(httpBase)
	httpSrv, err := pxehttp.New(pxehttp.Config{
		Addr: listen, Policy: policy, Leases: leases,
		Files: root, BaseURL: base, Agent: api, Logger: log,
	})
	must(t, err)
	servers["http"] = httpSrv.Serve
	if al.signed != "" {
		chain, err := bootfiles.FindSecureBoot(al.signed)
		must(t, err)
		tftpSrv, err := tftp.New(tftp.Config{Addr: pxetest.ServerIP.String() + ":69", IPXE: chain,
			Mounts:    map[string]*bootfiles.Root{"files": root},
			Generated: grub.Configs{Policy: policy, Leases: leases}, Logger: log})
		must(t, err)
		servers["tftp"] = tftpSrv.Serve
	}
	srvCtx, stopServers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); policy.Run(srvCtx) }()
	stopLab := al.lab.NS().Serve(t, srvCtx, servers)
	t.Cleanup(func() {
		stopServers()
		stopLab()
		wg.Wait()
		if t.Failed() {
			t.Logf("metal's log:\n%s", logs.String())
		}
	})
	select {
	case <-policy.Synced():
	case <-ctx.Done():
		t.Fatal("boot policy never watched the store")
	}
	al.netdev = al.lab.AddTap("tap0")
}

// give makes task vm-1's next agent task.
func (al *agentLab) give(task inventory.AgentTask) {
	al.t.Helper()
	intent := al.intent
	intent.Task = &task
	_, err := inventory.UpdateMachine(al.ctx, al.store, "vm-1", func(m *inventory.Machine) error {
		m.Intent = intent
		return nil
	})
	must(al.t, err)
}

// boot starts vm-1 (SeaBIOS, network first; OVMF with Secure Boot and
// its own PXE client when the lab is signed) with its disks in diskArgs,
// its console to the file serial.
func (al *agentLab) boot(serial string, diskArgs ...string) *pxetest.Process {
	al.t.Helper()
	vm := bootkit.VM{Firmware: bootkit.BIOS, MAC: al.mac, Serial: serial, Dir: al.dir, MemoryMiB: 768, Accel: qemutest.Accel(al.t),
		Netdev: al.netdev}
	if al.signed != "" {
		vm.Firmware, vm.NoROM, vm.SecureBoot = bootkit.UEFI, true, true
	}
	args, err := vm.Args()
	must(al.t, err)
	// A virtio RNG, as most VMs have: under TCG the kernel's own
	// entropy takes minutes, and the DHCP client's transaction ID
	// waits for it.
	args = append(args, "-device", "virtio-rng-pci")
	return al.lab.NS().Start("qemu-system-x86_64", append(args, diskArgs...)...)
}

// fail ends the test with what vm-1's console, QEMU and the store say.
func (al *agentLab) fail(serial string, q *pxetest.Process, format string, args ...any) {
	al.t.Helper()
	out, _ := os.ReadFile(serial)
	m, _ := al.store.Machine(al.ctx, "vm-1")
	al.t.Fatalf(format+"\nmachine: agent %+v\nserial console:\n%s\nqemu:\n%s", append(args, m.Agent, out, q.Log())...)
}

// waitAgent waits until vm-1's agent reports task id ended.
func (al *agentLab) waitAgent(id, serial string, q *pxetest.Process, within time.Duration) inventory.AgentStatus {
	al.t.Helper()
	deadline := time.Now().Add(within)
	for {
		m, err := al.store.Machine(al.ctx, "vm-1")
		must(al.t, err)
		if m.Agent != nil && m.Agent.TaskID == id && m.Agent.Phase != inventory.AgentRunning {
			return *m.Agent
		}
		if time.Now().After(deadline) {
			q.Stop()
			al.fail(serial, q, "task %s did not end within %v", id, within)
		}
		time.Sleep(time.Second)
	}
}

// waitPolicy waits until the store-backed policy answers action for mac.
func waitPolicy(t *testing.T, ctx context.Context, p *storepolicy.Policy, mac net.HardwareAddr, action pxe.Action) {
	t.Helper()
	for i := 0; i < 100; i++ {
		in, err := p.Intent(ctx, mac)
		if err == nil && in.Action == action {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("boot policy never answered %s for %s", action, mac)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWipeInQEMU erases the disks of a QEMU machine that hold an old
// image, by wipe = secure: an NVMe drive (QEMU's emulated controller,
// which does Format NVM but not Sanitize) and a SCSI disk on virtio-scsi,
// which answers the agent's ATA PASS-THROUGH (SG_IO) as no ATA drive and
// cannot discard securely. (The Debian cloud kernel the tests boot has
// no AHCI driver, and QEMU's IDE has no ATA security feature set.) The
// NVMe drive erases itself; the SCSI disk is overwritten and the record
// says why. Read back whole from the host afterwards, neither holds one
// byte of the old image, and both erase records reached metal as events.
func TestWipeInQEMU(t *testing.T) {
	al := newAgentLab(t, 6*time.Minute, "nvme", "virtio_scsi", "sd_mod")
	const size = 64 << 20
	old := bytes.Repeat([]byte("OLD-IMAGE-metal-"), size/16)
	nvme, scsi := filepath.Join(al.dir, "nvme.raw"), filepath.Join(al.dir, "scsi.raw")
	must(t, os.WriteFile(nvme, old, 0o644))
	must(t, os.WriteFile(scsi, old, 0o644))
	al.give(inventory.AgentTask{ID: "w1", Kind: inventory.TaskWipe, Wipe: inventory.WipeSecure, Secret: inventory.NewTaskSecret()})
	serial := filepath.Join(al.dir, "wipe.log")
	q := al.boot(serial,
		"-drive", "file="+nvme+",format=raw,if=none,id=nv0,cache=writethrough",
		"-device", "nvme,drive=nv0,serial=metal-nvme-0",
		"-drive", "file="+scsi+",format=raw,if=none,id=sd0,cache=writethrough",
		"-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-hd,drive=sd0,bus=scsi0.0,serial=metal-scsi-0")
	defer q.Stop()
	defer func() {
		if t.Failed() {
			out, _ := os.ReadFile(serial)
			t.Logf("serial console:\n%s", out)
		}
	}()
	ag := al.waitAgent("w1", serial, q, 5*time.Minute)
	q.Stop()
	if ag.Phase != inventory.AgentDone {
		al.fail(serial, q, "wipe: agent %+v, want done", ag)
	}
	evs, err := al.store.Events(al.ctx, inventory.EventQuery{Machine: "vm-1"})
	must(t, err)
	recs := map[string]inventory.EraseRecord{}
	for _, e := range evs {
		if e.Kind == inventory.EventErase && e.Erase != nil {
			recs[e.Erase.Serial] = *e.Erase
			t.Logf("erase record: %s", e.Erase)
		}
	}
	nv, sd := recs["metal-nvme-0"], recs["metal-scsi-0"]
	if nv.Method != inventory.WipeSecure || !strings.HasPrefix(nv.Mechanism, "nvme-format") || !nv.Verified || nv.Bytes != size {
		t.Errorf("NVMe erase record %+v: want secure by NVMe Format NVM, verified, %d bytes", nv, size)
	}
	if sd.Method != inventory.WipeZero || sd.Mechanism != "overwrite" || !sd.Verified || sd.Bytes != size ||
		!strings.Contains(sd.Note, "not an ATA drive") || !strings.Contains(sd.Note, "BLKSECDISCARD") {
		t.Errorf("SCSI erase record %+v: want zero by overwrite, verified, %d bytes, a note saying why not by the drive", sd, size)
	}
	for _, path := range []string{nvme, scsi} {
		b, err := os.ReadFile(path)
		must(t, err)
		for i, c := range b {
			if c != 0 {
				t.Errorf("%s: byte %d of the old image is still there after the wipe", filepath.Base(path), i)
				break
			}
		}
	}
}

// TestInstallIPv6InQEMU: the agent on an IPv6-only link. The machine
// boots the agent's kernel (directly: TestServeHTTPBootIPv6 proves the
// firmware's part over IPv6) with metal's URL on IPv6; the agent takes
// its reserved address by DHCPv6, reaches metal's HTTP server on the
// link's advertised prefix, reports its facts, writes the image and
// seeds the NoCloud network-config holding its IPv6 address. Nothing on
// the link has an IPv4 address.
func TestInstallIPv6InQEMU(t *testing.T) {
	if err := bootdisk.CheckTools(); err != nil {
		t.Skip(err)
	}
	al := newAgentLabOn(t, true, 8*time.Minute, "virtio_blk", "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8")
	ctx, store, dir, files := al.ctx, al.store, al.dir, al.files

	raw := filepath.Join(dir, "image.raw")
	must(t, bootkit.DiskImage(ctx, al.res.Kernel, "metal-installed-over-ipv6", raw))
	rb, err := os.ReadFile(raw)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(files, "disk.raw"), rb, 0o644))
	nc := networkConfig(t, `
network "v6" {
  interface = "eth0"
  subnet6   = "2001:db8:0:1::/64"
}
machine "vm-1" {
  mac = "`+al.mac.String()+`"
  ip6 = "`+lab6Machine.String()+`"
}
`)
	secret := inventory.NewTaskSecret()
	al.give(inventory.AgentTask{ID: "t6", Kind: inventory.TaskInstall, Image: "test", ImageURL: "/files/disk.raw",
		Format: "raw", Checksum: sha256sum(rb), Hostname: "vm-1", NetworkConfig: string(nc), Secret: secret})

	disk := filepath.Join(dir, "vda.raw")
	must(t, os.WriteFile(disk, nil, 0o644))
	must(t, os.Truncate(disk, 64<<20))
	serial := filepath.Join(dir, "install6.log")
	// What the machine's boot script would carry (pxe/ipxe): metal's
	// URL, the NIC and the task's secret.
	cmdline := al.intent.Cmdline + " BOOTIF=01-" + strings.ReplaceAll(al.mac.String(), ":", "-") + " metal.token=" + secret
	start := time.Now()
	q := al.boot(serial, append(bootkit.DiskArgs(disk),
		"-kernel", filepath.Join(files, "vmlinuz"), "-initrd", filepath.Join(files, "agent.cpio.gz"), "-append", cmdline)...)
	select {
	case <-q.Done():
	case <-time.After(5 * time.Minute):
		q.Stop()
		al.fail(serial, q, "install over IPv6 did not end within 5 minutes")
	}
	t.Logf("install over IPv6: power-on to reboot in %v", time.Since(start))
	m, err := store.Machine(ctx, "vm-1")
	must(t, err)
	if m.Agent == nil || m.Agent.TaskID != "t6" || m.Agent.Phase != inventory.AgentDone || m.Hardware == nil {
		al.fail(serial, q, "after the install the agent status is %+v (facts %v), want t6 done with facts", m.Agent, m.Hardware != nil)
	}
	out, _ := os.ReadFile(serial)
	if !strings.Contains(string(out), lab6Machine.String()) {
		t.Errorf("the agent's console never shows its DHCPv6 address %s:\n%s", lab6Machine, out)
	}
	netcfg, err := exec.Command("mtype", "-i", disk+"@@1M", "::/var/lib/cloud/seed/nocloud/network-config").CombinedOutput()
	if err != nil || !strings.Contains(string(netcfg), lab6Machine.String()+"/64") {
		t.Errorf("cloud-init network-config on the disk: %v\n%s", err, netcfg)
	}
	al.lab.CheckIPv6Only()
}
