// Package pxe holds metal's netboot servers (DHCP, TFTP, HTTP) and the small
// contract between them and the rest of metal: the servers speak protocols,
// and ask a BootPolicy what to answer. They never read the site file.
package pxe

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// ErrUnknownHost is returned by BootPolicy.Host for a MAC that no machine
// declares. Servers decide, from their own settings, whether an unknown host
// gets a pool address and the discovery environment or is ignored.
var ErrUnknownHost = errors.New("unknown host")

// Arch is the firmware kind of a netbooting client, from DHCP option 93 and
// the vendor class (RFC 4578, IANA processor architecture types).
type Arch string

const (
	ArchBIOS        Arch = "bios"          // x86 legacy PXE (type 0)
	ArchUEFIx64     Arch = "uefi-x64"      // x86-64 UEFI PXE (types 7, 9)
	ArchUEFIx64HTTP Arch = "uefi-x64-http" // x86-64 UEFI HTTP boot (type 16)
	ArchUEFIARM64   Arch = "uefi-arm64"    // arm64 UEFI PXE (type 11)
	ArchUnknown     Arch = "unknown"
)

// Host is what metal knows of one MAC address.
type Host struct {
	Name string           // machine name in the site ("web-01")
	MAC  net.HardwareAddr // the MAC the machine boots from
	IP   net.IP           // reserved IPv4 address; nil means "from the pool"
	// IP6 is the host's reserved IPv6 address (DHCPv6 IA_NA); nil:
	// DHCPv6 gives it none.
	IP6      net.IP
	Hostname string // DHCP option 12; defaults to Name
	Network  string // name of the site network the host belongs to
	// SwitchPort, when set, is where the host is plugged: DHCP answers
	// it only when its request is relayed by that relay with that
	// circuit-id (option 82).
	SwitchPort *SwitchPort
	// Boot is the chain the machine boots through; "" is BootIPXE.
	Boot BootPath
}

// SwitchPort is a switch port: the DHCP relay serving it (giaddr) and the
// circuit-id that relay sends for it.
type SwitchPort struct {
	Relay     netip.Addr
	CircuitID string
}

// BootPath is the chain of boot programs a machine's firmware is sent
// through.
type BootPath string

const (
	// BootIPXE: iPXE (over TFTP to PXE clients, over HTTP to UEFI HTTP
	// boot clients), then its script. Debian's iPXE is unsigned: a
	// machine with Secure Boot on refuses it.
	BootIPXE BootPath = "ipxe"
	// BootSecure: Debian's signed shim, then its signed GRUB, then the
	// GRUB config metal makes for the machine (pxe/grub) and a signed
	// kernel, all over TFTP. Such a machine is never offered iPXE.
	BootSecure BootPath = "secureboot"
	// BootHTTP: UEFI HTTP boot clients get iPXE over HTTP; PXE clients
	// get no boot file (no TFTP), iPXE its script.
	BootHTTP BootPath = "http"
	// BootVirtualMedia: the machine boots the agent from a CD its BMC
	// attaches; a netboot request of its is given no boot file.
	BootVirtualMedia BootPath = "virtual-media"
)

// Action is what a machine should do on its next netboot.
type Action string

const (
	ActionNone     Action = "none"     // do not netboot: no boot file is offered
	ActionDiscover Action = "discover" // boot the discovery environment (agent)
	ActionInstall  Action = "install"  // boot the install kernel/initrd
	ActionLocal    Action = "local"    // boot from local disk (iPXE exit/sanboot)
)

// Intent is the boot intent of a machine: written by the converge engine,
// read by the netboot servers.
type Intent struct {
	Action Action
	// Kernel and Initrd are absolute URLs (http://...) or paths on metal's
	// own HTTP server ("/images/debian-12/linux"); paths are prefixed with the
	// server's base URL when a script is rendered.
	Kernel  string
	Initrd  []string
	Cmdline string
	// Token authorises fetching this machine's script from an address other
	// than its lease (e.g. a relayed or statically addressed machine).
	Token string
	// AgentSecret is the one-time credential of the agent task this intent
	// boots (empty when it boots no agent task): the script passes it to
	// the agent on the kernel command line as metal.token=.
	AgentSecret string
	// Spent says the agent of that task has already started: the script
	// carrying AgentSecret was used once, and is not served again.
	Spent bool
}

// BootPolicy answers the netboot servers' questions about a MAC. The site
// (today) and the inventory store (later) implement it; the servers do not
// care which.
type BootPolicy interface {
	// Host returns the machine declared with this MAC, or ErrUnknownHost.
	Host(ctx context.Context, mac net.HardwareAddr) (Host, error)
	// Intent returns what the machine with this MAC should boot. Unknown
	// MACs get the policy's choice for unknown machines (discover or none).
	// The answer's Initrd may be shared with later answers: callers must
	// not modify it.
	Intent(ctx context.Context, mac net.HardwareAddr) (Intent, error)
}

// NamedIntents is what a BootPolicy may also answer: a script request's two
// questions, the machine's intent and its name, in one lookup. The HTTP
// server asks it, when its policy has it, instead of Intent and Host: a
// script is fetched at every netboot, and the second lookup was a tenth of
// the script handler's own cost.
type NamedIntents interface {
	// NamedIntent returns what Intent returns for mac, and the Name Host
	// returns for it ("" for a MAC no machine declares).
	NamedIntent(ctx context.Context, mac net.HardwareAddr) (Intent, string, error)
}

// Leases tells the HTTP server which address DHCP leased to a MAC, so that a
// machine's iPXE script is only served to that machine.
type Leases interface {
	// LeasedIP returns the address currently leased to mac, if any.
	LeasedIP(mac net.HardwareAddr) (net.IP, bool)
	// MACOf returns the MAC the address ip is leased to, if any.
	MACOf(ip net.IP) (net.HardwareAddr, bool)
}
