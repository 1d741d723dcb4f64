package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/metal-dev/metal/internal/bootdisk"
	"github.com/metal-dev/metal/pxe/bootfiles"
)

// The boot paths a lab VM can take (Config.BootPaths): one VM per path,
// named after it, each declared in the site file the way a rack's machine
// would be.
const (
	// PathBIOSPXE: SeaBIOS and the NIC's PXE ROM (QEMU's is iPXE), on the
	// lab's network: the default lab's BIOS VMs.
	PathBIOSPXE = "bios-pxe"
	// PathUEFIPXE: OVMF's own PXE client (no option ROM on the NIC), which
	// fetches ipxe.efi over TFTP.
	PathUEFIPXE = "uefi-pxe"
	// PathUEFIHTTP: OVMF's own HTTP boot client, its PXE turned off: no
	// TFTP at all (boot = "http").
	PathUEFIHTTP = "uefi-http"
	// PathSecureBoot: OVMF's Secure Boot build with Microsoft's keys; the
	// site says nothing, metal learns it from the virtual BMC and sends
	// Debian's signed shim and GRUB over TFTP, and the VM installs an
	// image that boots through the same signed chain.
	PathSecureBoot = "secure-boot"
	// PathVirtualMedia: a VM on a routed segment of its own with no DHCP
	// (198.51.100.0/24, the lab's namespace its router); its BMC attaches
	// metal's boot CD (boot = "virtual-media").
	PathVirtualMedia = "virtual-media"
	// PathIPv6: a VM on an IPv6-only link of its own (router
	// advertisements, DHCPv6; no IPv4 address on it), booting OVMF's PXE
	// over IPv6.
	PathIPv6 = "ipv6"
)

// pathUEFIIPXE is the path of the default lab's UEFI VMs: OVMF with the
// NIC's iPXE ROM, which asks metal's DHCP as iPXE from the start.
const pathUEFIIPXE = "uefi-ipxe"

// BootPaths are the paths --boot-paths takes, in the order their VMs are
// made ("all" is every one).
var BootPaths = []string{PathBIOSPXE, PathUEFIPXE, PathUEFIHTTP, PathSecureBoot, PathVirtualMedia, PathIPv6}

// ParseBootPaths reads a comma-separated list of boot paths, or "all";
// each path at most once, in BootPaths' order.
func ParseBootPaths(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	if strings.TrimSpace(s) == "all" {
		return slices.Clone(BootPaths), nil
	}
	seen := map[string]bool{}
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(BootPaths, p) {
			return nil, fmt.Errorf("boot path %q: want all or some of %s", p, strings.Join(BootPaths, ","))
		}
		seen[p] = true
	}
	var out []string
	for _, p := range BootPaths {
		if seen[p] {
			out = append(out, p)
		}
	}
	return out, nil
}

// The lab's extra segments, made only when a VM needs them. The routed
// one has no DHCP server: the lab's namespace is its router (the gateway
// below), and metal's servers are one hop away on the lab's bridge. The
// IPv6 one carries no IPv4 address at all.
const (
	routedBridge  = "br1"
	routedNet     = "routed"
	routedSubnet  = "198.51.100.0/24"
	routedGateway = "198.51.100.1"
	v6Bridge      = "br6"
	v6Net         = "lab6"
	v6Subnet      = "2001:db8:0:6c::/64"
	v6ServerIP    = "2001:db8:0:6c::1"
	labNet        = "lab"
)

// Uses reports whether the lab has a VM on boot path path.
func (st *State) Uses(path string) bool {
	return slices.ContainsFunc(st.VMs, func(vm VM) bool { return vm.BootPath == path })
}

// pathVM lays out the VM of boot path p, the lab's i-th.
func pathVM(vm VM, p string, i int) VM {
	vm.Name, vm.BootPath = p, p
	switch p {
	case PathBIOSPXE:
		vm.Firmware = BIOS
	case PathSecureBoot:
		vm.Firmware, vm.SecureBoot = UEFI, true
	case PathVirtualMedia:
		vm.Firmware, vm.Bridge, vm.Network = UEFI, routedBridge, routedNet
		vm.IP = fmt.Sprintf("198.51.100.%d", firstHost+i)
	case PathIPv6:
		vm.Firmware, vm.Bridge, vm.Network = UEFI, v6Bridge, v6Net
		vm.IP, vm.IP6 = "", fmt.Sprintf("2001:db8:0:6c::%x", firstHost+i)
	default:
		vm.Firmware = UEFI
	}
	return vm
}

// segmentSteps are the `ip` commands (inside the namespace) that make the
// bridges of the routed and the IPv6-only segment, when a VM is on one.
func segmentSteps(st *State) [][]string {
	var steps [][]string
	add := func(br string, addr ...string) {
		steps = append(steps,
			[]string{"link", "add", br, "type", "bridge"},
			[]string{"link", "set", br, "type", "bridge", "stp_state", "0", "forward_delay", "0"})
		steps = append(steps, append([]string{"addr", "add"}, addr...))
		steps = append(steps, []string{"link", "set", br, "up"})
	}
	if st.Uses(PathVirtualMedia) {
		add(routedBridge, routedGateway+"/24", "dev", routedBridge)
	}
	if st.Uses(PathIPv6) {
		// nodad: the address is metal's from the start; a link of its
		// own has no one to collide with.
		add(v6Bridge, v6ServerIP+"/64", "dev", v6Bridge, "nodad")
	}
	return steps
}

// signedImageFile is the lab's image for the Secure Boot VM.
const signedImageFile = "images/lab-os-signed.img"

// signedImage fetches Debian's signed shim and GRUBs (once, into the
// kernel's cache's sibling) and writes the lab's image again so that it
// boots through them: the installed OS boots with Secure Boot still on.
func signedImage(ctx context.Context, c Config, st *State) error {
	dir, err := bootfiles.FetchSecureBoot(ctx, secureBootCache)
	if err != nil {
		return fmt.Errorf("the Secure Boot VM's signed boot chain: %w", err)
	}
	st.SecureBootDir, st.SignedImage = dir, signedImageFile
	path := filepath.Join(c.Dir, signedImageFile)
	if exists(path) {
		return nil
	}
	c.Log.Info("building the lab's signed disk image", "path", path)
	return buildImage(ctx, path, osInit, &bootdisk.Signed{
		Shim: filepath.Join(dir, bootfiles.Shim), GRUB: filepath.Join(dir, bootfiles.DiskGRUB)})
}

// secureBootCache is where the signed chain is kept between labs.
const secureBootCache = "/var/cache/metal"

// SiteBoot is the machine's boot attribute in the site file; empty for
// metal's default (iPXE over PXE, or the signed chain where Secure Boot
// is on).
func (vm VM) SiteBoot() string {
	switch vm.BootPath {
	case PathUEFIHTTP:
		return "http"
	case PathVirtualMedia:
		return "virtual-media"
	}
	return ""
}

// pathNotes say, in the site file, what each boot path's VM shows.
var pathNotes = map[string]string{
	PathBIOSPXE:      "SeaBIOS and the NIC's PXE ROM (QEMU's is iPXE): iPXE's script, kernel and initrd over HTTP.",
	PathUEFIPXE:      "OVMF's own PXE client (no ROM on the NIC): ipxe.efi over TFTP, then iPXE's script over HTTP.",
	PathUEFIHTTP:     "OVMF's own HTTP boot client, its PXE off: ipxe.efi by URL from DHCP, no TFTP at all.",
	PathSecureBoot:   "OVMF's Secure Boot build, Microsoft's keys enrolled. Nothing below says so: metal reads\n  # Secure Boot from the virtual BMC and sends the signed shim and GRUB over TFTP, never iPXE;\n  # its image boots through the same signed chain.",
	PathVirtualMedia: "A routed segment (" + routedSubnet + ", gateway " + routedGateway + ") with no DHCP: the BMC attaches\n  # metal's boot CD, and the agent reaches metal over the routed hop with the address below.",
	PathIPv6:         "An IPv6-only link (" + v6Subnet + "): router advertisements, DHCPv6, OVMF's PXE over IPv6.",
}

// Note is what the site file says about the boot path of a VM made for
// it (--boot-paths; the default lab's VMs have none).
func (vm VM) Note() string {
	if vm.Name != vm.BootPath {
		return ""
	}
	return pathNotes[vm.BootPath]
}
