package apply_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/images/initramfs"
	"github.com/metal-dev/metal/internal/bootdisk"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/dhcp"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
	"github.com/metal-dev/metal/pxe/storeagent"
	"github.com/metal-dev/metal/pxe/storepolicy"
	"github.com/metal-dev/metal/site"
)

// qemuLab is the engine end to end: metal's side (store, store-backed
// policy, DHCP, HTTP with the agent protocol, and whatever else a test
// adds) in a lab namespace, the install agent built from this tree at
// /files/agent/ (vmlinuz, initrd.img), and one QEMU machine, vm-1, that
// only its virtual BMC starts and stops.
type qemuLab struct {
	t        *testing.T
	ctx      context.Context
	dir      string
	files    string
	root     *bootfiles.Root
	res      initramfs.Result
	lab      *pxetest.Lab
	logs     *syncbuf.Buffer
	log      *slog.Logger
	store    inventory.Store
	policy   *storepolicy.Policy
	dhcp     *dhcp.Server
	servers  map[string]func(context.Context) error
	httpBase string
	mac      net.HardwareAddr
	serial   string
	disk     string // vm-1's empty 64 MiB disk
	bmcAddr  string
	// hardware, when set before machine, is what vm-1's BMC reports (its
	// drives are those RAID volumes are built from), and volumes the
	// directory of the volumes' disks, which QEMU then has.
	hardware *virtual.Hardware
	volumes  string
}

// newQEMULab builds the agent and metal's servers (not yet serving: see
// machine) for a test that lasts at most timeout.
func newQEMULab(t *testing.T, timeout time.Duration) *qemuLab {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	l := &qemuLab{t: t, ctx: ctx, dir: t.TempDir(), mac: pxetest.RandomMAC(),
		httpBase: "http://" + pxetest.ServerIP.String() + ":8080"}
	l.files = filepath.Join(l.dir, "files")
	must(t, os.MkdirAll(filepath.Join(l.files, "agent"), 0o755))

	// The agent: this tree's metal with the cloud kernel (signed by
	// Debian) and its drivers.
	kroot, err := initramfs.FetchPackage(ctx, bootkit.KernelMeta, bootkit.KernelPackages())
	must(t, err)
	bin, err := testenv.BuildMetal(l.dir)
	must(t, err)
	l.res, err = initramfs.BuildAgent(ctx, initramfs.Options{
		Binary: bin, KernelDir: kroot, Out: filepath.Join(l.files, "agent", "initrd.img"),
		Modules: []string{"virtio_net", "virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "virtio_rng", "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8"},
	})
	must(t, err)
	kernel, err := os.ReadFile(l.res.Kernel)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(l.files, "agent", "vmlinuz"), kernel, 0o644))
	l.root, err = bootfiles.OpenRoot(l.files)
	must(t, err)
	t.Cleanup(func() { l.root.Close() })

	l.lab = pxetest.NewLab(t)
	l.logs = &syncbuf.Buffer{}
	l.log = slog.New(slog.NewJSONHandler(l.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l.store, err = inventory.Open(ctx, inventory.NewMemoryKV(), inventory.Options{Logger: l.log})
	must(t, err)
	t.Cleanup(func() { l.store.Close() })
	l.policy, err = storepolicy.New(ctx, l.store, storepolicy.Options{Logger: l.log})
	must(t, err)
	l.dhcp, err = dhcp.NewServer(dhcp.Config{
		Interface: pxetest.BridgeName, ServerIP: pxetest.ServerIP,
		Subnets:     []dhcp.Subnet{{CIDR: pxetest.LabSubnet, PoolStart: netip.MustParseAddr("192.0.2.100"), PoolEnd: netip.MustParseAddr("192.0.2.199")}},
		HTTPBaseURL: l.httpBase,
	}, l.policy, dhcp.NewFileStore(filepath.Join(l.dir, "leases.json")), l.log.With("test", "dhcp"))
	must(t, err)
	api, err := storeagent.New(storeagent.Config{Store: l.store, PollSeconds: 2, Logger: l.log})
	must(t, err)
	base, _ := url.Parse(l.httpBase)
	httpSrv, err := pxehttp.New(pxehttp.Config{
		Addr: pxetest.ServerIP.String() + ":8080", Policy: l.policy, Leases: l.dhcp.Leases(),
		Files: l.root, BaseURL: base, Agent: api, Logger: l.log,
	})
	must(t, err)
	l.servers = map[string]func(context.Context) error{"dhcp": l.dhcp.Serve, "http": httpSrv.Serve}
	l.serial = filepath.Join(l.dir, "serial.log")
	l.disk = filepath.Join(l.dir, "vda.raw")
	must(t, os.WriteFile(l.disk, nil, 0o644))
	must(t, os.Truncate(l.disk, 64<<20))
	return l
}

// image writes the gzip'd disk image raw as /files/disk.raw.gz and
// returns its path and checksum.
func (l *qemuLab) image(raw string) (path, sum string) {
	_, gz, err := bootkit.GzipFile(raw)
	must(l.t, err)
	path = filepath.Join(l.files, "disk.raw.gz")
	must(l.t, os.WriteFile(path, gz, 0o644))
	s := sha256.Sum256(gz)
	return path, hex.EncodeToString(s[:])
}

// machine serves metal's side and vm-1's virtual BMC, whose QEMU runs
// qemuArgs (without the program) in the namespace ns; the VM is powered
// off, and the servers stopped, at cleanup.
func (l *qemuLab) machine(ns string, qemuArgs []string) {
	t := l.t
	qemuLog := &syncbuf.Buffer{}
	vm, err := virtual.NewQEMU(virtual.QEMUConfig{Name: "vm-1", QMPSocket: filepath.Join(l.dir, "qmp.sock"),
		Command: append([]string{"ip", "netns", "exec", ns, "qemu-system-x86_64"}, qemuArgs...),
		Output:  qemuLog, Log: l.log.With("test", "vbmc"), VolumeDir: l.volumes})
	must(t, err)
	bmcSrv, err := virtual.NewServer(virtual.Options{Username: "admin", Password: "qemu-lab", Log: l.log},
		virtual.MachineSpec{Name: "vm-1", Machine: vm, Manufacturer: "QEMU", Hardware: l.hardware})
	must(t, err)
	bmcLn, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	l.bmcAddr = bmcLn.Addr().String()

	srvCtx, stopServers := context.WithCancel(l.ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.policy.Run(srvCtx) }()
	go func() {
		defer wg.Done()
		if err := bmcSrv.Serve(srvCtx, bmcLn, nil); err != nil {
			t.Errorf("virtual bmc: %v", err)
		}
	}()
	stopLab := l.lab.NS().Serve(t, srvCtx, l.servers)
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := vm.PowerOff(stopCtx, true); err != nil {
			t.Logf("power off the vm: %v", err)
		}
		stopServers()
		stopLab()
		wg.Wait()
		if t.Failed() {
			out, _ := os.ReadFile(l.serial)
			t.Logf("metal's log:\n%s\nqemu:\n%s\nserial console:\n%s", l.logs.String(), qemuLog.String(), out)
		}
	})
	select {
	case <-l.policy.Synced():
	case <-l.ctx.Done():
		t.Fatal("boot policy never watched the store")
	}
}

// apply loads the site src, in which %[1]s is vm-1's MAC and %[2]s its
// BMC's address (credentials admin, qemu-lab), plans it and applies it
// with an engine booting the lab's agent, tuned by opts (BMC, AgentBoot,
// ImageURL and the timeouts are set); every machine must succeed.
func (l *qemuLab) apply(src string, opts apply.Options) {
	t := l.t
	loaded, diags := site.Load("site.hcl", []byte(fmt.Sprintf(src, l.mac, l.bmcAddr)), site.Options{})
	if diags.HasErrors() {
		t.Fatalf("load site: %s", hcl.Diagnostics(diags).Error())
	}
	opts.AgentBoot = apply.AgentBoot{Kernel: "/files/agent/vmlinuz", Initrds: []string{"/files/agent/initrd.img"},
		Cmdline: "console=ttyS0 panic=-1 no_timer_check metal.url=" + l.httpBase}
	opts.ImageURL = func(string) string { return l.httpBase + "/files/disk.raw.gz" }
	opts.BMC = apply.DriverBMCs(l.log, func(c *bmc.Config) { c.Timeout = time.Minute })
	// TCG: the boot loaders, the kernel and the agent take minutes to
	// start on a loaded host.
	opts.BootTimeout, opts.AgentTimeout = 8*time.Minute, 10*time.Minute
	opts.Logger = l.log.With("test", "apply")
	p, err := apply.Plan(l.ctx, l.store, loaded.Site)
	must(t, err)
	start := time.Now()
	result, err := apply.New(loaded.Site, l.store, opts).Apply(l.ctx, p)
	must(t, err)
	if len(result.Failed) > 0 {
		t.Fatalf("apply failed: %v", result.Errors)
	}
	t.Logf("apply: %v", time.Since(start))
}

// bmcBlock is vm-1's bmc block in a qemuLab site.
const bmcBlock = `  bmc {
    protocol = "redfish"
    address  = "http://%[2]s"
    username = "admin"
    password = "qemu-lab"
  }`

// requireQEMULab skips without root, fails without QEMU or the tools that
// make the test's disk image, and lets the test run beside the others.
func requireQEMULab(t *testing.T, fw bootkit.Firmware) {
	t.Helper()
	testenv.Root(t, "network namespaces and QEMU")
	pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	if err := bootkit.CheckQEMU(fw); err != nil {
		t.Fatal(err)
	}
	if err := bootdisk.CheckTools(); err != nil {
		t.Fatal(err)
	}
	t.Parallel()
}

// tap puts tap0 on the lab's bridge, for a machine on metal's own network,
// and returns QEMU's -netdev value for it.
func (l *qemuLab) tap() string {
	l.lab.NS().MustIP("tuntap", "add", "tap0", "mode", "tap")
	l.lab.NS().MustIP("link", "set", "tap0", "master", pxetest.BridgeName, "up")
	return "tap,id=n0,ifname=tap0,script=no,downscript=no"
}

// labSite is a site for l.apply: vm-1 netboots on metal's network and
// installs the image at diskGz (its sha256 sum), whose OS does not phone
// home; extra goes in vm-1's block.
func labSite(name, diskGz, sum, extra string) string {
	return `site "` + name + `" {}

network "lab" {
  subnet = "192.0.2.0/24"
  mode   = "off"
}

image "os" {
  disk     = "file://` + diskGz + `"
  checksum = "sha256:` + sum + `"
  ready    = "none"
}

machine "vm-1" {
  mac     = "%[1]s"
  ip      = "192.0.2.50"
  network = "lab"
  image   = image.os
` + extra + bmcBlock + `
}

rollout {
  canary  = 0
  stagger = "0s"
}
`
}
