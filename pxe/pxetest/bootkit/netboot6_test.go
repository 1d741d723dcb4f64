package bootkit_test

import (
	"context"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/dhcp6"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
	"github.com/metal-dev/metal/pxe/ra"
)

// TestHTTPBootIPv6 is UEFI HTTP boot on an IPv6-only link: the lab's
// bridge has its IPv4 address taken away, and metal advertises the
// link's prefix (router advertisements, managed flag) and answers
// DHCPv6 only. OVMF's HTTPv6 boot client gets its reserved address and
// ipxe.efi's URL, iPXE gets its address and its script's URL by DHCPv6
// in turn, and the kernel and initrd come over HTTP on IPv6 to the
// marker. Nothing on the link has an IPv4 address.
func TestHTTPBootIPv6(t *testing.T) {
	if err := bootkit.CheckQEMU(bootkit.UEFI); err != nil {
		t.Fatal(err)
	}
	pxetest.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kernel, err := bootkit.Kernel(ctx, bootkit.CacheDir())
	must(t, err)
	ipxeBins, err := bootfiles.FindIPXE("")
	must(t, err)
	t.Parallel()

	lab := pxetest.NewLab(t)
	dir := t.TempDir()
	mac := pxetest.RandomMAC()
	marker := "metal-netboot-ipv6-" + lab.ID()
	root := servedRoot(t, dir, kernel, marker)

	lab.IPv6Only()
	netdev := lab.AddTap("tap0")
	prefix, server := pxetest.LabSubnet6, pxetest.ServerIP6
	machineIP := netip.MustParseAddr("2001:db8:0:1::50")

	logs := &jsonLog{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	policy := onePolicy{
		host: pxe.Host{Name: "vm-v6", MAC: mac, IP6: machineIP.AsSlice(), Boot: pxe.BootHTTP},
		intent: pxe.Intent{
			Action: pxe.ActionInstall, Kernel: "/files/vmlinuz", Initrd: []string{"/files/initrd.cpio"},
			Cmdline: "console=ttyS0 panic=-1 no_timer_check",
		},
	}
	httpBase := "http://[" + server.String() + "]:8080"
	base, _ := url.Parse(httpBase)
	d6, err := dhcp6.New(dhcp6.Config{Interface: pxetest.BridgeName, ServerIP: server, HTTPBaseURL: httpBase, Logger: log.With("test", "dhcp6")}, policy)
	must(t, err)
	adv, err := ra.New(ra.Config{Interface: pxetest.BridgeName, Prefix: prefix, Interval: 3 * time.Second, Logger: log.With("test", "ra")})
	must(t, err)
	httpSrv, err := pxehttp.New(pxehttp.Config{
		Addr: "[" + server.String() + "]:8080", Policy: policy, Leases: d6.Leases(),
		IPXE: ipxeBins, Files: root, BaseURL: base, Logger: log,
	})
	must(t, err)
	stop := lab.NS().Serve(t, context.Background(), map[string]func(context.Context) error{"dhcp6": d6.Serve, "ra": adv.Serve, "http": httpSrv.Serve})
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("metal's log:\n%s", logs.String())
		}
	})

	serial := filepath.Join(dir, "serial.log")
	vm := bootkit.VM{Firmware: bootkit.UEFI, MAC: mac, Serial: serial, Dir: dir,
		Netdev: netdev, HTTPBoot: true, Accel: qemutest.Accel(t)}
	args, err := vm.Args()
	must(t, err)
	start := time.Now()
	qemu := lab.NS().Start("qemu-system-x86_64", args...)
	wait, stopWait := context.WithTimeout(context.Background(), 10*time.Minute)
	defer stopWait()
	if err := bootkit.WaitForMarker(wait, serial, marker, qemu.Done()); err != nil {
		out, _ := os.ReadFile(serial)
		t.Fatalf("IPv6 HTTP boot: %v after %v\nserial console:\n%s\nqemu:\n%s", err, time.Since(start), out, qemu.Log())
	}
	t.Logf("power-on to marker in %v", time.Since(start))
	qemu.Stop()

	steps := map[string]func(map[string]any) bool{
		"ipxe.efi's URL by DHCPv6": func(m map[string]any) bool {
			return m["msg"] == "dhcp6 reply" && m["boot"] == httpBase+"/boot/"+bootfiles.UEFI
		},
		"the script's URL by DHCPv6 to iPXE": func(m map[string]any) bool {
			return m["msg"] == "dhcp6 reply" && m["boot"] == httpBase+"/ipxe/"+mac.String()
		},
		"iPXE over HTTP": func(m map[string]any) bool {
			return m["msg"] == "http request" && m["path"] == "/boot/"+bootfiles.UEFI && m["status"] == float64(200)
		},
		"script over HTTP": func(m map[string]any) bool {
			return m["msg"] == "http request" && m["path"] == "/ipxe/"+mac.String() && m["status"] == float64(200)
		},
		"kernel over HTTP from the reserved address": func(m map[string]any) bool {
			r, _ := m["client"].(string)
			return m["msg"] == "http request" && m["path"] == "/files/vmlinuz" && strings.Contains(r, machineIP.String())
		},
	}
	for step, match := range steps {
		if !logs.find(match) {
			t.Errorf("no log of %s", step)
		}
	}
	lab.CheckIPv6Only()
}
