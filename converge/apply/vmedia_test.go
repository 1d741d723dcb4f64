package apply_test

import (
	"bytes"
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/images/initramfs"
	"github.com/metal-dev/metal/images/iso"
	"github.com/metal-dev/metal/internal/bootdisk"
	"github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
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

// TestVirtualMediaInQEMU is virtual media across L3. The machine's NIC is
// on a routed segment (198.51.100.0/24, behind a router namespace) with no
// DHCP server and no relay; metal (DHCP, HTTP, the agent protocol) is on
// 192.0.2.0/24. The engine builds the machine's boot CD (the agent, with
// its static address, gateway, metal's URL and the task's secret on the
// kernel line), and the machine's virtual BMC (Redfish over QEMU) fetches
// it from metal's HTTP server across the router, attaches it and boots it
// once; the agent writes the image over the routed hop and reboots into
// the installed OS, whose marker shows on the serial console. Metal's
// DHCP server never hears of the machine.
func TestVirtualMediaInQEMU(t *testing.T) {
	testenv.Root(t, "network namespaces and QEMU")
	pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	if err := bootkit.CheckQEMU(bootkit.BIOS); err != nil {
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
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dir := t.TempDir()
	files := filepath.Join(dir, "files")
	must(t, os.MkdirAll(filepath.Join(files, "agent"), 0o755))

	// The agent: this tree's metal with the cloud kernel's drivers.
	kroot, err := initramfs.FetchPackage(ctx, bootkit.KernelMeta, filepath.Join(bootkit.CacheDir(), "kernel-packages"))
	must(t, err)
	bin, err := testenv.BuildMetal(dir)
	must(t, err)
	agentInitrd := filepath.Join(files, "agent", "initrd.img")
	res, err := initramfs.BuildAgent(ctx, initramfs.Options{
		Binary: bin, KernelDir: kroot, Out: agentInitrd,
		Modules: []string{"virtio_net", "virtio_pci", "virtio_blk", "virtio_rng", "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8"},
	})
	must(t, err)

	// The image: the test disk, gzip'd.
	marker := "metal-vmedia-installed"
	raw := filepath.Join(dir, "image.raw")
	must(t, bootkit.DiskImage(ctx, res.Kernel, marker, raw))
	_, gz, err := bootkit.GzipFile(raw)
	must(t, err)
	diskGz := filepath.Join(files, "disk.raw.gz")
	must(t, os.WriteFile(diskGz, gz, 0o644))
	sum := sha256.Sum256(gz)
	root, err := bootfiles.OpenRoot(files)
	must(t, err)
	t.Cleanup(func() { root.Close() })

	// The network: metal on the lab's bridge; a router between it and the
	// machine's segment, which has a bridge of its own and no DHCP.
	lab := pxetest.NewLab(t)
	router := lab.AddHost("router", nil)
	router.MustIP("addr", "add", "192.0.2.254/24", "dev", "eth0")
	lab.AddBridge(router, "seg", "198.51.100.1/24")
	router.MustIP("tuntap", "add", "tap0", "mode", "tap")
	router.MustIP("link", "set", "tap0", "master", "seg", "up")
	if out, err := router.Command(ctx, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("router: %v: %s", err, out)
	}
	lab.NS().MustIP("route", "add", "198.51.100.0/24", "via", "192.0.2.254")

	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := inventory.Open(ctx, inventory.NewMemoryKV(), inventory.Options{Logger: log})
	must(t, err)
	t.Cleanup(func() { store.Close() })
	policy, err := storepolicy.New(ctx, store, storepolicy.Options{Logger: log})
	must(t, err)
	dhcpSrv, err := dhcp.NewServer(dhcp.Config{
		Interface: pxetest.BridgeName, ServerIP: pxetest.ServerIP,
		Subnets:     []dhcp.Subnet{{CIDR: pxetest.LabSubnet, PoolStart: netip.MustParseAddr("192.0.2.100"), PoolEnd: netip.MustParseAddr("192.0.2.199")}},
		HTTPBaseURL: "http://192.0.2.1:8080",
	}, policy, dhcp.NewFileStore(filepath.Join(dir, "leases.json")), log.With("test", "dhcp"))
	must(t, err)
	api, err := storeagent.New(storeagent.Config{Store: store, PollSeconds: 2, Logger: log})
	must(t, err)
	httpBase := "http://" + pxetest.ServerIP.String() + ":8080"
	base, _ := url.Parse(httpBase)
	httpSrv, err := pxehttp.New(pxehttp.Config{
		Addr: pxetest.ServerIP.String() + ":8080", Policy: policy, Leases: dhcpSrv.Leases(),
		Files: root, BaseURL: base, Agent: api, Logger: log,
	})
	must(t, err)

	// The machine and its BMC: QEMU in the router's namespace on the
	// segment, started by the virtual BMC, which serves Redfish to the
	// engine on loopback. No option ROM and no boot index: the BMC's
	// boot override alone says CD or disk.
	mac := pxetest.RandomMAC()
	disk := filepath.Join(dir, "vda.raw")
	must(t, os.WriteFile(disk, nil, 0o644))
	must(t, os.Truncate(disk, 64<<20))
	serial := filepath.Join(dir, "serial.log")
	qargs := append([]string{"ip", "netns", "exec", router.Name, "qemu-system-x86_64"},
		qemu.BaseArgs(qemutest.Accel(t), 768)...)
	qargs = append(qargs, "-serial", "file:"+serial,
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,romfile=,mac="+mac.String(),
		"-device", "virtio-rng-pci",
		"-drive", "file="+disk+",format=raw,if=virtio,cache=unsafe")
	qemuLog := &syncbuf.Buffer{}
	vm, err := virtual.NewQEMU(virtual.QEMUConfig{Name: "vm-1", QMPSocket: filepath.Join(dir, "qmp.sock"),
		Command: qargs, Output: qemuLog, Log: log.With("test", "vbmc")})
	must(t, err)
	bmcSrv, err := virtual.NewServer(virtual.Options{Username: "admin", Password: "vmedia-test", Log: log},
		virtual.MachineSpec{Name: "vm-1", Machine: vm, Manufacturer: "QEMU"})
	must(t, err)
	bmcLn, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)

	srvCtx, stopServers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); policy.Run(srvCtx) }()
	go func() {
		defer wg.Done()
		if err := bmcSrv.Serve(srvCtx, bmcLn, nil); err != nil {
			t.Errorf("virtual bmc: %v", err)
		}
	}()
	stopLab := lab.NS().Serve(t, srvCtx, map[string]func(context.Context) error{"dhcp": dhcpSrv.Serve, "http": httpSrv.Serve})
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
			out, _ := os.ReadFile(serial)
			t.Logf("metal's log:\n%s\nqemu:\n%s\nserial console:\n%s", logs.String(), qemuLog.String(), out)
		}
	})
	select {
	case <-policy.Synced():
	case <-ctx.Done():
		t.Fatal("boot policy never watched the store")
	}

	src := fmt.Sprintf(`site "vmedia" {}

network "far" {
  subnet  = "198.51.100.0/24"
  gateway = "198.51.100.1"
  mode    = "off"
}

image "os" {
  disk     = "file://%s"
  checksum = "sha256:%s"
  ready    = "none"
}

machine "vm-1" {
  mac     = "%s"
  ip      = "198.51.100.50"
  network = "far"
  image   = image.os
  boot    = "virtual-media"
  bmc {
    protocol = "redfish"
    address  = "http://%s"
    username = "admin"
    password = "vmedia-test"
  }
}

rollout {
  canary  = 0
  stagger = "0s"
}
`, diskGz, hex.EncodeToString(sum[:]), mac, bmcLn.Addr())
	loaded, diags := site.Load("site.hcl", []byte(src), site.Options{})
	if diags.HasErrors() {
		t.Fatalf("load site: %s", hcl.Diagnostics(diags).Error())
	}
	media := iso.Media{Tools: tools, Dir: filepath.Join(files, "media"), URL: httpBase + "/files/media",
		Kernel: res.Kernel, Initrds: []string{agentInitrd}}
	engine := apply.New(loaded.Site, store, apply.Options{
		AgentBoot: apply.AgentBoot{Kernel: "/files/agent/vmlinuz", Initrds: []string{"/files/agent/initrd.img"},
			Cmdline: "console=ttyS0 panic=-1 no_timer_check metal.url=" + httpBase},
		ImageURL: func(string) string { return httpBase + "/files/disk.raw.gz" },
		BMC:      apply.DriverBMCs(log, func(c *bmc.Config) { c.Timeout = time.Minute }),
		Media:    media.Build,
		// TCG: the CD's kernel and the agent take minutes to start on a
		// loaded host.
		BootTimeout: 8 * time.Minute, AgentTimeout: 10 * time.Minute,
		Logger: log.With("test", "apply"),
	})
	p, err := apply.Plan(ctx, store, loaded.Site)
	must(t, err)
	start := time.Now()
	result, err := engine.Apply(ctx, p)
	must(t, err)
	if len(result.Failed) > 0 {
		t.Fatalf("apply failed: %+v", result.Failed)
	}
	t.Logf("apply: %v", time.Since(start))

	// The agent rebooted the machine; the engine set its next boot to the
	// disk, which holds the image now.
	wait, stop := context.WithTimeout(ctx, 4*time.Minute)
	defer stop()
	if err := bootkit.WaitForMarker(wait, serial, marker, nil); err != nil {
		t.Fatalf("the installed OS: %v", err)
	}

	out, _ := os.ReadFile(serial)
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
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"test":"dhcp"`) && strings.Contains(strings.ToLower(line), mac.String()) {
			t.Errorf("metal's DHCP heard of the machine: %s", line)
		}
	}
	m, err := store.Machine(ctx, "vm-1")
	must(t, err)
	if m.State != inventory.StateProvisioned {
		t.Errorf("state %s, want provisioned", m.State)
	}
	if !strings.Contains(logs.String(), `"path":"/files/media/vm-1-`) {
		t.Errorf("no log of the BMC fetching the CD from metal's HTTP server")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
