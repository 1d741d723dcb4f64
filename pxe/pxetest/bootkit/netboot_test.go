package bootkit_test

import (
	"bytes"
	"context"
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

	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/dhcp"
	"github.com/metal-dev/metal/pxe/grub"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
	"github.com/metal-dev/metal/pxe/tftp"
)

// onePolicy knows one machine.
type onePolicy struct {
	host   pxe.Host
	intent pxe.Intent
}

func (p onePolicy) Host(_ context.Context, mac net.HardwareAddr) (pxe.Host, error) {
	if !bytes.Equal(mac, p.host.MAC) {
		return pxe.Host{}, pxe.ErrUnknownHost
	}
	return p.host, nil
}

func (p onePolicy) Intent(_ context.Context, mac net.HardwareAddr) (pxe.Intent, error) {
	if !bytes.Equal(mac, p.host.MAC) {
		return pxe.Intent{Action: pxe.ActionNone}, nil
	}
	return p.intent, nil
}

// jsonLog is the servers' shared log, kept for assertions and for the
// failure report.
type jsonLog struct{ syncbuf.Buffer }

func (l *jsonLog) find(match func(map[string]any) bool) bool {
	return len(l.Records(match)) > 0
}

// TestNetboot is issue 4's end-to-end proof: in a lab namespace with a
// bridge and a tap device, a diskless QEMU machine net-boots from metal's
// own DHCP, TFTP and HTTP servers and runs the kernel and initramfs metal
// serves, which prints a marker on the serial console.
//
//   - bios, uefi: SeaBIOS or OVMF with the NIC's iPXE ROM (ipxe-qemu).
//     That ROM is iPXE, so DHCP sends it straight to its HTTP script:
//     DHCP → HTTP script → kernel + initrd over HTTP (with initrd= on the
//     kernel line, which OVMF's EFI stub needs).
//   - uefi-pxe: OVMF's own PXE client (no NIC ROM), as on real UEFI
//     hardware: DHCP (arch 7) → TFTP ipxe.efi → iPXE → DHCP again (user
//     class iPXE) → HTTP script → kernel + initrd. This case proves metal's
//     TFTP in the chain, and that full-mode DHCP sends option 43
//     (discovery control 8) to UEFI clients: without it EDK2 takes the
//     offer for a "BINL" offer, asks port 4011, and says "PXE-E16: No
//     valid offer received".
func TestNetboot(t *testing.T) {
	kernel, ipxeBins := bootFiles(t, bootkit.BIOS, bootkit.UEFI)
	bootAll(t, map[string]bootCase{
		"bios":     {fw: bootkit.BIOS},
		"uefi":     {fw: bootkit.UEFI},
		"uefi-pxe": {fw: bootkit.UEFI, noROM: true},
	}, kernel, ipxeBins)
}

// TestHTTPBoot is UEFI HTTP boot with no TFTP server at all: OVMF's own
// HTTP boot client (no NIC ROM; its PXE options turned off, so HTTP boot
// is the first it tries) sends vendor class HTTPClient, gets a URL from
// metal's DHCP, fetches ipxe.efi over HTTP, and iPXE goes on to its script,
// the kernel and the initrd, as in TestNetboot.
//
//   - full: metal is the network's DHCP server.
//   - proxy: another DHCP server (a second metal, knowing nothing of the
//     machine, in a namespace of its own on the same bridge) hands out the
//     address; metal in proxy mode adds the boot URL, which OVMF takes
//     from a proxy offer that says HTTPClient.
func TestHTTPBoot(t *testing.T) {
	kernel, ipxeBins := bootFiles(t, bootkit.UEFI)
	bootAll(t, map[string]bootCase{
		"full":  {fw: bootkit.UEFI, httpBoot: true},
		"proxy": {fw: bootkit.UEFI, httpBoot: true, proxy: true},
	}, kernel, ipxeBins)
}

// TestSecureBoot: OVMF's Secure Boot build with Microsoft's keys enrolled
// (OVMF_VARS_4M.ms.fd).
//
//   - ipxe-refused: the firmware refuses Debian's unsigned iPXE (Access
//     Denied), which proves a test machine really has Secure Boot on.
//   - signed: the machine boots the signed chain (Debian's shim-signed and
//     grub-efi-amd64-signed, downloaded and unpacked into the test cache,
//     never installed), all over TFTP: shim, GRUB, the GRUB config metal
//     makes for this machine (grub.Configs), then Debian's signed kernel
//     (which shim checks) and the initrd; the kernel says "Secure boot
//     enabled" and the initrd prints the marker.
func TestSecureBoot(t *testing.T) {
	kernel, ipxeBins := bootFiles(t, bootkit.UEFI)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	signedDir, err := bootkit.SecureBootDir(ctx, bootkit.CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	signed, err := bootfiles.FindSecureBoot(signedDir)
	if err != nil {
		t.Fatal(err)
	}
	bootAll(t, map[string]bootCase{
		"ipxe-refused": {fw: bootkit.UEFI, noROM: true, secureBoot: true, refused: true},
		"signed":       {fw: bootkit.UEFI, noROM: true, secureBoot: true, signed: true},
	}, kernel, bootfiles.Join(ipxeBins, signed))
}

// bootFiles checks that QEMU boots each firmware and returns the test
// kernel and the iPXE binaries every boot case serves.
func bootFiles(t *testing.T, fws ...bootkit.Firmware) (kernel string, ipxeBins *bootfiles.IPXE) {
	t.Helper()
	testenv.Root(t, "QEMU in a network namespace")
	for _, fw := range fws {
		if err := bootkit.CheckQEMU(fw); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kernel, err := bootkit.Kernel(ctx, bootkit.CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	if ipxeBins, err = bootfiles.FindIPXE(""); err != nil {
		t.Fatal(err)
	}
	return kernel, ipxeBins
}

// bootAll boots each case in a lab of its own, in parallel: each case is
// independent of the others (its own namespace, servers and machine), and
// a boot spends much of its time waiting on firmware and the network.
func bootAll(t *testing.T, cases map[string]bootCase, kernel string, bins *bootfiles.IPXE) {
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			netboot(t, tc, kernel, bins)
		})
	}
}

// bootCase is one way a test machine boots.
type bootCase struct {
	fw    bootkit.Firmware
	noROM bool // OVMF's own PXE client: iPXE over TFTP
	// httpBoot: OVMF's own HTTP boot client, and no TFTP server runs.
	httpBoot bool
	// proxy: metal's DHCP in proxy mode beside another DHCP server.
	proxy bool
	// secureBoot: the firmware has Secure Boot on; signed: metal sends the
	// machine through the signed chain (shim, GRUB, kernel).
	secureBoot, signed bool
	// refused: the firmware is expected to refuse the boot program
	// (Access Denied) rather than reach the marker.
	refused bool
}

func netboot(t *testing.T, tc bootCase, kernel string, ipxeBins *bootfiles.IPXE) {
	pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	fw := tc.fw
	lab := pxetest.NewLab(t)
	dir := t.TempDir()
	mac := pxetest.RandomMAC()
	marker := "metal-netboot-" + string(fw) + "-" + lab.ID()

	root := servedRoot(t, dir, kernel, marker)

	logs := &jsonLog{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	wantIP := net.IPv4(192, 0, 2, 50)
	policy := onePolicy{
		host: pxe.Host{Name: "vm-" + string(fw), MAC: mac, IP: wantIP, Boot: pxe.BootIPXE},
		intent: pxe.Intent{
			Action: pxe.ActionInstall,
			Kernel: "/files/vmlinuz",
			Initrd: []string{"/files/initrd.cpio"},
			// no_timer_check: a starved TCG guest otherwise may panic
			// "IO-APIC + timer doesn't work" before it reaches /init.
			Cmdline: "console=ttyS0 panic=-1 no_timer_check",
		},
	}
	httpBase := "http://" + pxetest.ServerIP.String() + ":8080"
	base, _ := url.Parse(httpBase)
	if tc.signed {
		policy.host.Boot = pxe.BootSecure
	}
	dhcpCfg := dhcp.Config{
		Interface:   pxetest.BridgeName,
		ServerIP:    pxetest.ServerIP,
		Subnets:     []dhcp.Subnet{{CIDR: pxetest.LabSubnet, PoolStart: netip.MustParseAddr("192.0.2.100"), PoolEnd: netip.MustParseAddr("192.0.2.199")}},
		HTTPBaseURL: httpBase,
	}
	services := map[string]service{}
	var leases pxe.Leases
	if tc.proxy {
		// The site's DHCP server, which knows nothing of netbooting: a
		// second metal in full mode whose policy knows no machine.
		other := lab.AddHost("dhcp", nil)
		other.MustIP("addr", "add", "192.0.2.3/24", "dev", "eth0")
		otherSrv, err := dhcp.NewServer(dhcp.Config{
			Interface: "eth0", ServerIP: netip.MustParseAddr("192.0.2.3"),
			Subnets:     dhcpCfg.Subnets,
			HTTPBaseURL: "http://192.0.2.3", // never sent: it boots no one
		}, onePolicy{}, dhcp.NewFileStore(filepath.Join(dir, "other-leases.json")), log.With("test", "other-dhcp"))
		must(t, err)
		services["other dhcp"] = service{other, otherSrv.Serve}
		leases, wantIP = otherSrv.Leases(), nil
		dhcpCfg.Mode, dhcpCfg.Subnets = dhcp.ModeProxy, nil
	}
	dhcpSrv, err := dhcp.NewServer(dhcpCfg, policy, dhcp.NewFileStore(filepath.Join(dir, "leases.json")), log.With("test", "dhcp"))
	must(t, err)
	services["dhcp"] = service{lab.NS(), dhcpSrv.Serve}
	if leases == nil {
		leases = dhcpSrv.Leases()
	}
	if !tc.httpBoot {
		tftpCfg := tftp.Config{Addr: pxetest.ServerIP.String() + ":69", IPXE: ipxeBins, Root: root, Logger: log}
		if tc.signed {
			// GRUB's config, kernel and initrd come over TFTP too, by
			// the paths HTTP serves them under.
			tftpCfg.Mounts = map[string]*bootfiles.Root{"files": root}
			tftpCfg.Generated = grub.Configs{Policy: policy, Leases: leases}
		}
		tftpSrv, err := tftp.New(tftpCfg)
		must(t, err)
		services["tftp"] = service{lab.NS(), tftpSrv.Serve}
	}
	httpSrv, err := pxehttp.New(pxehttp.Config{
		Addr: pxetest.ServerIP.String() + ":8080", Policy: policy, Leases: leases,
		IPXE: ipxeBins, Files: root, BaseURL: base, Logger: log,
	})
	must(t, err)
	services["http"] = service{lab.NS(), httpSrv.Serve}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for name, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ns.Do(func() error { return s.serve(ctx) }); err != nil {
				t.Errorf("%s server: %v", name, err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if t.Failed() {
			t.Logf("metal's log:\n%s", logs.String())
		}
	})

	// The machine's cable: a tap device on the lab's bridge.
	lab.NS().MustIP("tuntap", "add", "tap0", "mode", "tap")
	lab.NS().MustIP("link", "set", "tap0", "master", pxetest.BridgeName, "up")
	serial := filepath.Join(dir, "serial.log")
	vm := bootkit.VM{
		Firmware: fw, MAC: mac, Serial: serial, Dir: dir,
		Netdev: "tap,id=n0,ifname=tap0,script=no,downscript=no",
		NoROM:  tc.noROM, HTTPBoot: tc.httpBoot, SecureBoot: tc.secureBoot,
		Accel: qemutest.Accel(t),
	}
	args, err := vm.Args()
	must(t, err)
	start := time.Now()
	qemu := lab.NS().Start("qemu-system-x86_64", args...)

	wait, stop := context.WithTimeout(context.Background(), 6*time.Minute)
	defer stop()
	if tc.refused {
		// OVMF: 'failed to load Boot0001 "UEFI PXEv4 ..." ...: Access Denied'
		if err := bootkit.WaitForMarker(wait, serial, "Access Denied", qemu.Done()); err != nil {
			out, _ := os.ReadFile(serial)
			t.Fatalf("unsigned iPXE with Secure Boot on: %v after %v\nserial console:\n%s", err, time.Since(start), out)
		}
		qemu.Stop()
		if out, _ := os.ReadFile(serial); bytes.Contains(out, []byte(marker)) || bytes.Contains(out, []byte("iPXE")) {
			t.Errorf("iPXE ran with Secure Boot on:\n%s", out)
		}
		if !logs.find(func(m map[string]any) bool { return m["msg"] == "tftp transfer" && m["file"] == bootfiles.UEFI }) {
			t.Errorf("no log of iPXE over TFTP: the refusal was of something else")
		}
		return
	}
	if err := bootkit.WaitForMarker(wait, serial, marker, qemu.Done()); err != nil {
		out, _ := os.ReadFile(serial)
		t.Fatalf("%s netboot: %v after %v\nserial console:\n%s\nqemu:\n%s", fw, err, time.Since(start), out, qemu.Log())
	}
	t.Logf("%s: power-on to marker in %v", fw, time.Since(start))
	qemu.Stop()

	// Each step happened, on metal's servers, for this machine.
	steps := map[string]func(map[string]any) bool{
		"script over HTTP": func(m map[string]any) bool {
			return m["msg"] == "http request" && m["path"] == "/ipxe/"+mac.String() && m["status"] == float64(200)
		},
		"kernel over HTTP": func(m map[string]any) bool {
			return m["msg"] == "http request" && m["path"] == "/files/vmlinuz" && m["status"] == float64(200)
		},
		"initrd over HTTP": func(m map[string]any) bool {
			return m["msg"] == "http request" && m["path"] == "/files/initrd.cpio" && m["status"] == float64(200)
		},
	}
	switch {
	case tc.signed:
		out, _ := os.ReadFile(serial)
		if !bytes.Contains(out, []byte("Secure boot enabled")) {
			t.Errorf("the kernel did not say \"Secure boot enabled\"")
		}
		for _, f := range []string{bootfiles.Shim, bootfiles.GRUB, "grub/grub.cfg", "files/vmlinuz", "files/initrd.cpio"} {
			if tc.httpBoot {
				steps[f+" over HTTP"] = func(m map[string]any) bool {
					return m["msg"] == "http request" && m["path"] == "/boot/"+f && m["status"] == float64(200)
				}
			} else {
				steps[f+" over TFTP"] = func(m map[string]any) bool {
					return m["msg"] == "tftp transfer" && strings.TrimPrefix(m["file"].(string), "/") == f && m["result"] == "ok"
				}
			}
		}
		for _, s := range []string{"script", "kernel", "initrd"} {
			delete(steps, s+" over HTTP")
		}
	case tc.noROM:
		steps["iPXE over TFTP"] = func(m map[string]any) bool {
			return m["msg"] == "tftp transfer" && m["file"] == bootfiles.UEFI && m["result"] == "ok"
		}
	}
	if tc.httpBoot && !tc.signed {
		steps["iPXE over HTTP"] = func(m map[string]any) bool {
			return m["msg"] == "http request" && m["path"] == "/boot/"+bootfiles.UEFI && m["status"] == float64(200)
		}
	}
	if tc.proxy {
		steps["a proxy offer to HTTPClient"] = func(m map[string]any) bool {
			// (the request's "msg" follows the line's in the JSON: match
			// the fields only a proxy boot line has)
			return m["port4011"] == false && m["boot"] == httpBase+"/boot/"+bootfiles.UEFI
		}
	}
	for step, match := range steps {
		if !logs.find(match) {
			t.Errorf("%s: no log of %s", fw, step)
		}
	}
	if t.Failed() {
		out, _ := os.ReadFile(serial)
		t.Logf("serial console:\n%s", out)
	}
	if ip, ok := leases.LeasedIP(mac); !ok || (wantIP != nil && !ip.Equal(wantIP)) {
		t.Errorf("lease of %s: %v %v, want %v", mac, ip, ok, wantIP)
	}
}

// service is a server and the namespace it runs in.
type service struct {
	ns    *pxetest.Netns
	serve func(context.Context) error
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// servedRoot is what metal serves in a netboot test: the Debian kernel and
// an initramfs printing marker, under dir/files. Copied into the served
// root, as os.Root refuses links out.
func servedRoot(t *testing.T, dir, kernel, marker string) *bootfiles.Root {
	t.Helper()
	files := filepath.Join(dir, "files")
	must(t, os.MkdirAll(files, 0o755))
	kb, err := os.ReadFile(kernel)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(files, "vmlinuz"), kb, 0o644))
	img, err := bootkit.Initramfs(marker)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(files, "initrd.cpio"), img, 0o644))
	root, err := bootfiles.OpenRoot(files)
	must(t, err)
	t.Cleanup(func() { root.Close() })
	return root
}
