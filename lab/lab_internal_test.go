package lab

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

func TestLastLine(t *testing.T) {
	tests := map[string]struct {
		file string
		want string
	}{
		"ipxe with escapes and backspaces": {"serial-ipxe.log", "Configuring (net0 52:54:00:6d:6c:02)........"},
		"blank lines after the marker":     {"serial-marker.log", "metal-lab-disk-ok vm-1"},
		"carriage returns overwrite":       {"serial-progress.log", "Downloading... 99%"},
		"empty log":                        {"serial-empty.log", ""},
		"no log yet":                       {"missing.log", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, LastLine(filepath.Join("testdata", tc.file))); diff != "" {
				t.Errorf("LastLine (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPlan checks the lab's layout: which VMs boot UEFI and which BMC each
// is behind.
func TestPlan(t *testing.T) {
	type vm struct{ Name, Firmware, Protocol, BMCAddress string }
	tests := map[string]struct {
		machines, uefi int
		want           []vm
	}{
		"default": {2, 1, []vm{
			{"vm-1", BIOS, IPMI, "192.0.2.3:623"},
			{"vm-2", UEFI, Redfish, "http://192.0.2.2:8002"},
		}},
		"one machine is on Redfish": {1, 0, []vm{
			{"vm-1", BIOS, Redfish, "http://192.0.2.2:8001"},
		}},
		"all UEFI": {3, 3, []vm{
			{"vm-1", UEFI, IPMI, "192.0.2.3:623"},
			{"vm-2", UEFI, Redfish, "http://192.0.2.2:8002"},
			{"vm-3", UEFI, Redfish, "http://192.0.2.2:8003"},
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := plan(Config{Dir: "/tmp/lab", Machines: tc.machines, UEFI: tc.uefi})
			var got []vm
			for _, v := range st.VMs {
				got = append(got, vm{v.Name, v.Firmware, v.Protocol, v.BMCAddress})
				if (v.Firmware == UEFI) != (v.OVMFVars != "") {
					t.Errorf("%s: firmware %s with OVMF vars %q", v.Name, v.Firmware, v.OVMFVars)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSiteFileLoads renders the site of a three-VM lab, and of one with a
// VM per boot path, and loads it with metal's own loader: it is valid and
// declares what the lab made.
func TestSiteFileLoads(t *testing.T) {
	for name, c := range map[string]Config{
		"three VMs":          {Machines: 3, UEFI: 1},
		"a VM per boot path": {Machines: 2, UEFI: 1, BootPaths: BootPaths},
	} {
		t.Run(name, func(t *testing.T) { siteFileLoads(t, c) })
	}
}

func siteFileLoads(t *testing.T, c Config) {
	dir := t.TempDir()
	c.Dir = dir
	st := plan(c)
	signedSum := ""
	if st.Uses(PathSecureBoot) {
		st.SecureBootDir, st.SignedImage = "/var/cache/metal/secureboot", signedImageFile
		signedSum = "sha256:" + strings.Repeat("ef", 32)
	}
	fwSum := "sha256:" + strings.Repeat("cd", 32)
	b, err := renderSite(st, "pw-Abc123", "sha256:"+strings.Repeat("ab", 32), signedSum, fwSum)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st.Site, b, 0o600); err != nil {
		t.Fatal(err)
	}
	res, diags := site.LoadFile(st.Site, site.Options{})
	if diags.HasErrors() {
		t.Fatalf("the lab's site file is invalid: %v\n%s", diags, b)
	}
	type machine struct {
		Name, MAC, IP, IP6, Network, Boot, Image, Protocol, Address, Password, Firmware string
	}
	var got, want []machine
	for _, m := range res.Site.Machines {
		ip, ip6 := "", ""
		if m.IP.IsValid() {
			ip = m.IP.String()
		}
		if m.IP6.IsValid() {
			ip6 = m.IP6.String()
		}
		got = append(got, machine{m.Name, m.MAC.String(), ip, ip6, m.Network, m.Boot, m.Image,
			m.BMC.Protocol, m.BMC.Address, m.BMC.Password, m.Labels["firmware"]})
	}
	for _, vm := range st.VMs {
		boot, image := vm.SiteBoot(), "lab-os"
		if boot == "" {
			boot = site.BootIPXE
		}
		if vm.SecureBoot {
			image = "lab-os-signed"
		}
		want = append(want, machine{vm.Name, vm.MAC, vm.IP, vm.IP6, vm.Network, boot, image,
			vm.Protocol, vm.BMCAddress, "pw-Abc123", vm.Firmware})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("machines (-want +got):\n%s", diff)
	}
	n := res.Site.Network("lab")
	if n == nil || n.Interface != bridge || n.Subnet != netip.MustParsePrefix(subnet) {
		t.Errorf("network lab = %+v, want interface %s on %s", n, bridge, subnet)
	}
	if st.Uses(PathVirtualMedia) {
		if n := res.Site.Network(routedNet); n == nil || n.Mode != site.ModeOff || n.Gateway != netip.MustParseAddr(routedGateway) {
			t.Errorf("network %s = %+v, want no DHCP and gateway %s", routedNet, n, routedGateway)
		}
	}
	if st.Uses(PathIPv6) {
		if n := res.Site.Network(v6Net); n == nil || n.Subnet.IsValid() || n.Subnet6 != netip.MustParsePrefix(v6Subnet) || n.Interface != v6Bridge {
			t.Errorf("network %s = %+v, want IPv6 only (%s) on %s", v6Net, n, v6Subnet, v6Bridge)
		}
	}
	if got := res.Site.Settings.SecureBootDir; got != st.SecureBootDir {
		t.Errorf("secureboot_dir = %q, want %q", got, st.SecureBootDir)
	}
	if !res.Site.Variables["bmc_password"].Sensitive {
		t.Error("bmc_password is not sensitive")
	}
	if r := res.Site.Rollout; r.Canary != 0 || r.BatchSize != len(st.VMs) {
		t.Errorf("rollout = canary %d batch %d, want every VM at once", r.Canary, r.BatchSize)
	}
	for _, m := range res.Site.Machines {
		if len(m.BIOS) > 0 || len(m.Firmware) > 0 {
			t.Errorf("%s declares hardware while its lines are commented: bios %v, firmware %v", m.Name, m.BIOS, m.Firmware)
		}
		if m.SecureBoot != nil {
			t.Errorf("%s declares secure_boot: the lab's Secure Boot VM is learned from its BMC", m.Name)
		}
	}

	// Its hardware lines, once the operator takes them in: the Redfish
	// VMs (not the IPMI one, which cannot set them) declare a BIOS
	// setting and a firmware image.
	if err := os.WriteFile(st.Site, []byte(strings.ReplaceAll(string(b), HardwareMark, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	res, diags = site.LoadFile(st.Site, site.Options{})
	if diags.HasErrors() {
		t.Fatalf("the lab's site file with its hardware lines is invalid: %v", diags)
	}
	for i, m := range res.Site.Machines {
		type hw struct {
			BIOS                         map[string]string
			Component, Version, Checksum string
		}
		var got, want hw
		if len(m.Firmware) == 1 {
			f := m.Firmware[0]
			got = hw{m.BIOS, f.Component, f.Version, f.Image.Checksum}
		} else {
			got = hw{BIOS: m.BIOS}
		}
		if st.VMs[i].Protocol == Redfish {
			want = hw{map[string]string{BIOSAttribute: BIOSValue}, FirmwareComponent, FirmwareVersion, fwSum}
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s's hardware (-want +got):\n%s", m.Name, diff)
		}
	}
}

// TestAgentStep: lab status shows the agent's step beside a machine only
// while it tells where a provision is, or where one failed.
func TestAgentStep(t *testing.T) {
	for state, want := range map[inventory.State]string{
		inventory.StateProvisioning:   "writing",
		inventory.StateDeprovisioning: "writing",
		inventory.StateFailed:         "writing",
		inventory.StateProvisioned:    "",
		inventory.StateReady:          "",
	} {
		m := inventory.Machine{State: state, Agent: &inventory.AgentStatus{Step: "writing"}}
		if got := agentStep(m); got != want {
			t.Errorf("%s: step %q, want %q", state, got, want)
		}
	}
	if got := agentStep(inventory.Machine{State: inventory.StateProvisioning}); got != "" {
		t.Errorf("no agent: step %q", got)
	}
}

// TestSerialLines: the IPMI VM's QEMU connects to the lab's serial line,
// whose other end is its BMC's Serial-over-LAN alone, as a real server's
// serial port is its BMC's; the others' are unix sockets QEMU serves for
// metal serve's console hub. Every line is logged.
func TestSerialLines(t *testing.T) {
	st := plan(Config{Dir: "/tmp/lab", Machines: 2, UEFI: 1})
	want := map[string]string{
		"vm-1": "socket,id=ser0,path=/tmp/lab/vms/vm-1/line.sock,server=off,logfile=/tmp/lab/vms/vm-1/serial.log,logappend=on",
		"vm-2": "socket,id=ser0,path=/tmp/lab/vms/vm-2/console.sock,server=on,wait=off,logfile=/tmp/lab/vms/vm-2/serial.log,logappend=on",
	}
	for _, vm := range st.VMs {
		if got := serialChardev(vm); got != want[vm.Name] {
			t.Errorf("%s: serial line %q, want %q", vm.Name, got, want[vm.Name])
		}
		if (vm.Protocol == IPMI) != (vm.Console == "") || (vm.Protocol == IPMI) != (vm.SOL != "" && vm.Line != "") {
			t.Errorf("%s (%s): console socket %q, SOL %q, serial line %q", vm.Name, vm.Protocol, vm.Console, vm.SOL, vm.Line)
		}
	}
}

// TestConsoleWithoutServe: with no metal serve for the lab, a VM's console
// is its socket, and a VM whose serial line only its BMC's SOL reaches
// says so (metal lab console then runs metal console inside the lab).
func TestConsoleWithoutServe(t *testing.T) {
	st := plan(Config{Dir: t.TempDir(), Machines: 2, UEFI: 1})
	ctx := context.Background()
	if _, _, err := st.Console(ctx, &st.VMs[0]); !errors.Is(err, ErrSOLOnly) {
		t.Errorf("console of the IPMI VM without serve: %v, want ErrSOLOnly", err)
	}
	if _, _, err := st.Console(ctx, &st.VMs[1]); err == nil || !strings.Contains(err.Error(), "is the VM powered on?") {
		t.Errorf("console of a VM that is off: %v, want one asking whether it is on", err)
	}
	if err := os.MkdirAll(filepath.Dir(st.VMs[1].Console), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", st.VMs[1].Console)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, via, err := st.Console(ctx, &st.VMs[1])
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if !strings.Contains(via, "straight to QEMU's console socket") {
		t.Errorf("way to the console: %q", via)
	}
}
