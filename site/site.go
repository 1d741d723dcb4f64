// Package site is metal's site language: it loads HCL files into a typed,
// validated description of the desired state of a site. Loading has no side
// effects; every problem is reported as an hcl.Diagnostic with the file, line
// and column it comes from, all at once.
package site

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/metal-dev/metal/internal/dhcpopt"
)

// Site is the desired state of one site, as declared in its HCL file.
type Site struct {
	Name     string
	Settings Settings
	// Variables holds the declared input variables with their final values.
	Variables map[string]*Variable
	Networks  []*Network
	Images    []*Image
	Machines  []*Machine
	Rollout   Rollout
	// Fence is the site's fence device (nil: none): how a promoted
	// standby stops the old primary's host before it serves.
	Fence *Fence

	networkByName map[string]*Network
	imageByName   map[string]*Image
}

// Network returns the network with the given name, or nil.
func (s *Site) Network(name string) *Network { return s.networkByName[name] }

// Image returns the image with the given name, or nil.
func (s *Site) Image(name string) *Image { return s.imageByName[name] }

// WithBMC returns the named machines, or with no names every machine that
// has a bmc block: the machines a BMC verb works on. A name the site does
// not declare, or of a machine without a bmc block, is an error.
func (s *Site) WithBMC(names []string) ([]*Machine, error) {
	byName := map[string]*Machine{}
	var all []*Machine
	for _, m := range s.Machines {
		byName[m.Name] = m
		if m.BMC != nil {
			all = append(all, m)
		}
	}
	if len(names) == 0 {
		if len(all) == 0 {
			return nil, fmt.Errorf("no machine of site %q has a bmc block", s.Name)
		}
		return all, nil
	}
	var out []*Machine
	for _, n := range names {
		m, ok := byName[n]
		switch {
		case !ok:
			return nil, fmt.Errorf("site %q has no machine %q", s.Name, n)
		case m.BMC == nil:
			return nil, fmt.Errorf("machine %q has no bmc block", n)
		}
		out = append(out, m)
	}
	return out, nil
}

// NeedsSecureBoot says whether a machine boots the signed chain (boot =
// "secureboot"), which metal must then find.
func (s *Site) NeedsSecureBoot() bool {
	for _, m := range s.Machines {
		if m.Boot == BootSecure {
			return true
		}
	}
	return false
}

// Settings is the `site` block: where state lives and how the daemon serves.
type Settings struct {
	// State is the state store URL: file://PATH (embedded, default) or
	// etcd://host:port,host:port/prefix.
	State string
	// Listen is where the API, web console and HTTP boot server listen.
	Listen string
	// IPXEDir overrides where iPXE binaries are found (default /usr/lib/ipxe).
	IPXEDir string
	// SecureBootDir overrides where the signed boot chain of boot =
	// "secureboot" machines is found (shimx64.efi and grubx64.efi; default
	// $METAL_SECUREBOOT_DIR, else Debian's shim-signed and
	// grub-efi-amd64-signed).
	SecureBootDir string
	// UnknownMachines says what unknown MACs get: "discover" boots them into
	// the discovery agent, "ignore" makes metal silent towards them so it can
	// share a network with another DHCP server.
	UnknownMachines string
	DeclRange       hcl.Range
}

// Variable is an input variable: declared in the file, valued from -var,
// -var-file, METAL_VAR_<name> or its default.
type Variable struct {
	Name        string
	Description string
	Sensitive   bool
	DeclRange   hcl.Range
}

// Network mode values.
const (
	ModeDHCP  = "dhcp"  // metal is the DHCP server of the subnet
	ModeProxy = "proxy" // another server hands out addresses; metal adds boot info
	ModeOff   = "off"   // no DHCP from metal on this network
)

// Network is one L2/L3 segment machines boot on.
type Network struct {
	Name      string
	Interface string
	Subnet    netip.Prefix
	// Subnet6 is the network's IPv6 prefix, invalid when it has none: its
	// machines' ip6 addresses are in it, and metal advertises it on the
	// link (router advertisements) and answers DHCPv6 there.
	Subnet6 netip.Prefix
	Gateway netip.Addr // invalid when none
	DNS     []netip.Addr
	// Gateway6 is the IPv6 default router of subnet6's machines (in
	// subnet6, or a link-local address as routers usually are), invalid
	// when none; DNS6 are IPv6 name servers, sent in DHCPv6 (option 23)
	// and written into the NoCloud network config beside the ip6.
	Gateway6 netip.Addr
	DNS6     []netip.Addr
	Domain   string
	// PoolStart and PoolEnd bound the dynamic pool for undeclared machines;
	// both invalid when the network has no pool.
	PoolStart, PoolEnd netip.Addr
	Mode               string
	LeaseTime          time.Duration
	// RelayAgents are the DHCP relays forwarding this subnet's requests
	// to metal: their addresses in the subnet (giaddr) and, when they
	// forward from another address, that one too. Relayed requests from
	// anything else are dropped.
	RelayAgents []netip.Addr
	// NTP servers (option 42), MTU (26, 0: none) and classless static
	// routes (121) given to the network's machines.
	NTP    []netip.Addr
	MTU    int
	Routes []dhcpopt.Route
	// Options are more DHCP options, checked against their type and
	// encoded, in code order.
	Options []Option

	DeclRange hcl.Range
	ranges    map[string]hcl.Range
}

// Option is a DHCP option a network sets: its code, the name or code it
// was written as, and its value encoded.
type Option struct {
	Code  uint8
	Name  string
	Value []byte
}

// InPool reports whether addr lies inside the network's dynamic pool.
func (n *Network) InPool(addr netip.Addr) bool {
	if !n.PoolStart.IsValid() || !addr.IsValid() {
		return false
	}
	return addr.Compare(n.PoolStart) >= 0 && addr.Compare(n.PoolEnd) <= 0
}

// Image is an operating system image machines can be provisioned with.
type Image struct {
	Name    string
	Kernel  Source
	Initrd  []Source
	Cmdline string
	Disk    Source
	// Format of the disk image: raw, gz, zst, xz or qcow2 (from the file
	// name when not given; a raw disk that is a qcow2 by its content is
	// taken as one). A qcow2 is converted once, in the image cache, into
	// the zstd stream of its raw disk that agents are given.
	Format string
	// Ready is how metal learns that the installed OS came up (see
	// Readiness); ReadyTimeout bounds the wait (DefaultReadyTimeout when
	// not given).
	Ready        Readiness
	ReadyTimeout time.Duration
	// CmdlineSensitive: Cmdline came from a sensitive variable. Such a
	// cmdline reaches the machine's boot script and nothing else metal
	// shows (Source.Sensitive says the same of a file's URL).
	CmdlineSensitive bool
	DeclRange        hcl.Range
	ranges           map[string]hcl.Range
}

// DefaultReadyTimeout bounds the wait for an installed OS to report in:
// a server's firmware, the OS's first boot and cloud-init's first run.
const DefaultReadyTimeout = 15 * time.Minute

// Readiness is an image's readiness check: how a machine provisioned
// with it proves its installed OS booted. Kind is one of:
//
//   - ReadyCloudInit (the default): cloud-init's phone_home module posts
//     to metal, with a per-task secret in the URL metal's NoCloud seed
//     gives it;
//   - ReadyTCP: metal connects to Port on the machine's address;
//   - ReadyHTTP: metal gets URL (its host is the machine's address) until
//     it answers 2xx;
//   - ReadyNone: the machine counts as up once its disk is written and
//     its next boot is set to it (chosen knowingly: nothing is checked).
type Readiness struct {
	Kind string
	Port int    // ReadyTCP, ReadyHTTP
	Path string // ReadyHTTP: path and query
	// Scheme is http or https (ReadyHTTP).
	Scheme string
}

// Readiness kinds.
const (
	ReadyCloudInit = "cloud-init"
	ReadyTCP       = "tcp"
	ReadyHTTP      = "http"
	ReadyNone      = "none"
)

// String is the check as written in a site file.
func (r Readiness) String() string {
	switch r.Kind {
	case ReadyTCP:
		return fmt.Sprintf("tcp:%d", r.Port)
	case ReadyHTTP:
		return fmt.Sprintf("%s://:%d%s", r.Scheme, r.Port, r.Path)
	case "":
		return ReadyCloudInit
	}
	return r.Kind
}

// ParseReadiness reads an image's ready attribute: "cloud-init",
// "tcp:PORT", "http://:PORT/PATH" (or https; the host is left out, as
// metal probes the machine's own address) or "none".
func ParseReadiness(v string) (Readiness, error) {
	switch {
	case v == "" || v == ReadyCloudInit:
		return Readiness{Kind: ReadyCloudInit}, nil
	case v == ReadyNone:
		return Readiness{Kind: ReadyNone}, nil
	case strings.HasPrefix(v, "tcp:"):
		p, err := strconv.Atoi(strings.TrimPrefix(v, "tcp:"))
		if err != nil || p < 1 || p > 65535 {
			return Readiness{}, fmt.Errorf("%q: a TCP check is \"tcp:PORT\", with a port from 1 to 65535", v)
		}
		return Readiness{Kind: ReadyTCP, Port: p}, nil
	case strings.HasPrefix(v, "http://") || strings.HasPrefix(v, "https://"):
		u, err := url.Parse(v)
		if err != nil {
			return Readiness{}, fmt.Errorf("%q: %v", v, err)
		}
		if u.Hostname() != "" {
			return Readiness{}, fmt.Errorf("%q: leave the host out (\"%s://:%s%s\"): metal probes each machine's own address", v, u.Scheme, u.Port(), u.RequestURI())
		}
		port := 80
		if u.Scheme == "https" {
			port = 443
		}
		if u.Port() != "" {
			if port, err = strconv.Atoi(u.Port()); err != nil || port < 1 || port > 65535 {
				return Readiness{}, fmt.Errorf("%q: port must be from 1 to 65535", v)
			}
		}
		return Readiness{Kind: ReadyHTTP, Scheme: u.Scheme, Port: port, Path: u.RequestURI()}, nil
	}
	return Readiness{}, fmt.Errorf("%q: ready must be \"cloud-init\", \"tcp:PORT\", an HTTP URL without its host (\"http://:8080/healthz\"), or \"none\"", v)
}

// Source is a file metal fetches: an http(s), sftp or file URL (or a path
// relative to the site file) and the checksum it must match.
type Source struct {
	URL string
	// Checksum is "sha256:<hex>" or "sha512:<hex>"; empty if not given.
	Checksum string
	// Sensitive: the URL came from a sensitive variable (it holds a
	// credential); nothing shows it.
	Sensitive bool
}

// markSensitive records that attribute name came from a sensitive
// variable.
func (m *Machine) markSensitive(name string) {
	if m.Sensitive == nil {
		m.Sensitive = map[string]bool{}
	}
	m.Sensitive[name] = true
}

// Remote reports whether the source is fetched over the network, in which
// case a checksum is required.
func (s Source) Remote() bool { return isRemoteURL(s.URL) }

// Power values of a machine.
const (
	PowerOn  = "on"
	PowerOff = "off"
)

// Boot paths of a machine: the chain its firmware is sent through.
const (
	// BootIPXE (the default): iPXE, over TFTP to PXE firmware or over
	// HTTP to UEFI HTTP boot firmware, then its script.
	BootIPXE = "ipxe"
	// BootHTTP: UEFI HTTP boot only; PXE requests get no boot file, so
	// the machine needs no TFTP.
	BootHTTP = "http"
	// BootSecure: Secure Boot on; Debian's signed shim, signed GRUB and
	// a signed kernel, never iPXE.
	BootSecure = "secureboot"
	// BootVirtualMedia: no netboot at all; metal builds a CD holding the
	// install agent with the machine's static address, gateway and
	// metal's URL, and its BMC (Redfish) attaches it, for a machine whose
	// NIC has no DHCP path to metal but a routed one.
	BootVirtualMedia = "virtual-media"
)

// BootPaths are the values of a machine's boot attribute.
var BootPaths = []string{BootIPXE, BootHTTP, BootSecure, BootVirtualMedia}

// WipeMethods are the values of a machine's wipe attribute: how its disks
// are erased when it is deprovisioned. quick zeroes the first and last
// MiB (labels and partition tables; the data stays); discard tells the
// device every block is unused (BLKDISCARD), overwriting where it then
// still returns data; zero overwrites every byte; secure asks the drive
// to erase itself (NVMe Sanitize or Format, ATA Secure Erase), or
// overwrites when it cannot. All but quick are verified by sampled reads
// across the whole disk.
var WipeMethods = []string{"quick", "discard", "zero", "secure"}

// Machine is one declared machine (one instance, after for_each or count).
type Machine struct {
	Name     string
	MAC      net.HardwareAddr
	IP       netip.Addr // invalid when the machine takes a pool address
	IP6      netip.Addr // reserved IPv6 address (DHCPv6), invalid when none
	Hostname string
	Network  string // name of the network the machine boots on
	Image    string // name of the image, "" for none
	Power    string
	Boot     string // one of BootPaths
	// SecureBoot is the site's secure_boot: nil when unset, and metal then
	// learns it from the machine's BMC (Redfish's SecureBoot resource)
	// before it netboots the machine; false says not to ask.
	SecureBoot *bool
	Labels     map[string]string
	// Disk is the device the agent installs onto ("" lets the agent pick the
	// first non-removable disk).
	Disk string
	// Wipe is how the agent erases the machine's disks when it leaves the
	// site (one of WipeMethods; "" leaves it to metal apply --wipe,
	// whose default is quick).
	Wipe              string
	SSHAuthorizedKeys []string
	UserData          string
	BMC               *BMC // nil when the machine has no BMC
	// BootMode is the firmware boot mode the BMC must set: BootModeUEFI,
	// BootModeLegacy, or "" to leave it as it is.
	BootMode string
	// BIOS are BIOS attributes in the BMC's own names (Redfish Bios
	// Attributes) with the values they must have, as text: numbers and
	// booleans are converted to the attribute's type when applied.
	BIOS map[string]string
	// Firmware are the firmware components the machine must run, each
	// with the image that installs it, in the site's order.
	Firmware []Firmware
	// RAID is the layout of the machine's RAID controller (nil: metal
	// leaves it as it is).
	RAID []Volume
	// SwitchPort, when set, is where the machine is plugged: its DHCP
	// requests are answered only when relayed by that relay with that
	// circuit-id (option 82).
	SwitchPort *SwitchPort
	// Interface is the name of the boot NIC (the one with MAC) in the
	// installed OS, "" when the site does not say; Bonds, VLANs and
	// Routes are the rest of its network config (see NetworkConfig).
	Interface string
	Bonds     []Bond
	VLANs     []VLAN
	Routes    []Route
	// Sensitive names the attributes whose value came from a sensitive
	// variable, as a plan names them ("labels.owner", "bmc.username",
	// "user_data"): nothing prints them. The attributes that cannot be
	// hidden (mac, ip, name, ...) are refused when sensitive.
	Sensitive map[string]bool

	// DeclRange is the machine block's header; ranges locate each attribute
	// for diagnostics (instances of one block share them).
	DeclRange hcl.Range
	ranges    map[string]hcl.Range
}

// SwitchPort is a switch port a machine is declared at: the DHCP relay
// serving it (one of its network's relay_agents) and the circuit-id that
// relay puts in option 82 for the port.
type SwitchPort struct {
	Relay     netip.Addr
	CircuitID string
}

// Range returns the source range of one of the machine's attributes, or its
// block header if the attribute was not written.
func (m *Machine) Range(attr string) hcl.Range { return rangeOr(m.ranges, attr, m.DeclRange) }

// Boot modes (Machine.BootMode).
const (
	BootModeUEFI   = "uefi"
	BootModeLegacy = "legacy"
)

// BMC protocols.
const (
	ProtocolRedfish = "redfish"
	ProtocolIPMI    = "ipmi"
	ProtocolAuto    = "auto" // Redfish first, then IPMI
)

// BMC is how metal reaches a machine's baseboard management controller.
type BMC struct {
	Protocol    string
	Address     string
	Username    string
	Password    string // sensitive: never printed
	InsecureTLS bool
	CAFile      string
	DeclRange   hcl.Range
	ranges      map[string]hcl.Range
	sensitive   map[string]bool // username, password: from a sensitive variable
}

// UsernameSensitive reports whether the username came from a sensitive
// variable: then it is kept out of logs as the password is.
func (b *BMC) UsernameSensitive() bool { return b.sensitive["username"] }

// Range returns the source range of one of the bmc block's attributes, or the
// block header if the attribute was not written.
func (b *BMC) Range(attr string) hcl.Range { return rangeOr(b.ranges, attr, b.DeclRange) }

// Fence is the fence block: the BMC of the host the primary metal runs on.
// metal promote powers that host off through it, and confirms it is off,
// before the standby serves: a primary cut off from the backup directory
// never learns it was fenced, but it stops when its power does.
type Fence struct {
	BMC       *BMC
	DeclRange hcl.Range
}

// Rollout is how a change reaches the fleet: a canary alone, then batches.
type Rollout struct {
	Canary int
	// BatchSize is a count; BatchPercent, when non-zero, a percentage of the
	// machines being changed (from batch_size = "20%").
	BatchSize    int
	BatchPercent int
	MaxFailures  int
	// By is a label name: batches never span two values of it (one rack, one
	// failure domain, at a time). Empty means no grouping.
	By string
	// Stagger spaces power-ons inside a batch so a rack never surges at once.
	Stagger   time.Duration
	DeclRange hcl.Range
}

func rangeOr(ranges map[string]hcl.Range, attr string, fallback hcl.Range) hcl.Range {
	if r, ok := ranges[attr]; ok {
		return r
	}
	return fallback
}
