// Package dhcp is metal's DHCPv4 server. In full mode it hands out addresses
// (reservations from the boot policy, a dynamic pool for the rest) and boot
// information; in proxy mode it runs beside another DHCP server and gives
// PXE clients boot information only.
//
// Protocol and policy are apart: Handler turns one request into one reply
// (or none) and never touches a socket; Server owns the sockets. What a MAC
// boots comes from a pxe.BootPolicy.
package dhcp

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/metal-dev/metal/internal/dhcpopt"
)

// Mode says whether the server hands out addresses.
type Mode string

const (
	// ModeFull: metal is the network's DHCP server.
	ModeFull Mode = "full"
	// ModeProxy: another server hands out addresses; metal answers PXE
	// clients with boot information only (proxyDHCP, ports 67 and 4011).
	ModeProxy Mode = "proxy"
)

// Subnet is one IPv4 network the server answers for: the one its interface
// is on, or one behind a relay (picked by the relay's giaddr).
type Subnet struct {
	CIDR    netip.Prefix
	Gateway netip.Addr   // option 3; unset: no router option
	DNS     []netip.Addr // option 6
	Domain  string       // option 15
	// PoolStart and PoolEnd bound the dynamic pool (inclusive) for MACs
	// without a reservation. Unset: this subnet has reservations only.
	PoolStart, PoolEnd netip.Addr
	// LeaseTime defaults to one hour. T1 and T2 are 1/2 and 7/8 of it.
	LeaseTime time.Duration
	// Relays are the relay agents allowed to forward this subnet's
	// requests. A relayed request (giaddr set) is answered only when its
	// giaddr is one of them, and it was sent from one of them or from the
	// giaddr itself (a relay often forwards from its upstream address).
	// None: the subnet's clients must be on the server's own link.
	Relays []netip.Addr
	// NTP servers (option 42), the MTU (26; 0: none), classless static
	// routes (121; with a gateway, a default route by it is added, as
	// clients given option 121 ignore option 3) and more options.
	NTP     []netip.Addr
	MTU     int
	Routes  []dhcpopt.Route
	Options []Option
}

// Option is a DHCP option a subnet's replies carry: its code and value,
// already encoded (internal/dhcpopt checks and encodes site options).
type Option struct {
	Code  uint8
	Value []byte
}

// RateLimit bounds how many packets one MAC gets answered: a token bucket
// of Burst packets refilled by one every Every. The zero value means 10
// packets at once, then 2 a second, which no well-behaved client (even a
// PXE ROM, then iPXE, then an OS, in one boot) reaches.
type RateLimit struct {
	Disabled bool
	Burst    int
	Every    time.Duration
	// MaxTracked bounds the table of MACs being limited (default 4096);
	// when full, an arbitrary entry is forgotten, which costs that MAC no
	// more than a fresh burst.
	MaxTracked int
	// PoolBurst and PoolEvery are a budget shared by all MACs the policy
	// does not know: a new pool binding (an offer, or a lease asked for
	// directly, to a MAC holding no address) takes a token from a bucket
	// of PoolBurst refilled by one every PoolEvery; without one the
	// request is not answered. The per-MAC limit does nothing against a
	// flood of random MACs; this keeps such a flood from taking more than
	// the budget of a pool, so declared machines (never counted) and
	// later unknown ones still find addresses. Default 64, then one a
	// second. Disabled turns this budget off too.
	PoolBurst int
	PoolEvery time.Duration
}

// BootFiles names what each kind of client is told to fetch. Names are
// paths on the TFTP server; HTTPBoot is a URL.
type BootFiles struct {
	BIOS  string // x86 BIOS PXE (arch 0); default "undionly.kpxe"
	UEFI  string // x86-64 UEFI PXE (arch 7, 9); default "ipxe.efi" ("snponly.efi" also works)
	ARM64 string // arm64 UEFI PXE (arch 11); default none: such clients get no boot file
	// HTTPBoot is the URL UEFI HTTP boot clients (vendor class HTTPClient)
	// fetch; default HTTPBaseURL + "/boot/" + UEFI, where pxe/http serves
	// the iPXE binaries.
	HTTPBoot string
	// SecureBoot is the first signed program (shim) of machines whose boot
	// path is pxe.BootSecure: a name on the TFTP server for UEFI PXE
	// clients (UEFI HTTP boot clients get none: the signed GRUB has no
	// HTTP); default "shimx64.efi" (bootfiles.Shim, from shim-signed).
	// Shim then fetches GRUB beside it.
	SecureBoot string
}

// Config is the DHCP server's configuration.
type Config struct {
	// Interface is the network interface the server binds to
	// (SO_BINDTODEVICE). Only Server needs it.
	Interface string
	// ServerIP is this server's address on Interface: the server
	// identifier (option 54). The subnet containing it is the one for
	// clients that are not relayed.
	ServerIP netip.Addr
	Subnets  []Subnet
	Mode     Mode // default ModeFull
	// IgnoreUnknown: MACs the policy does not know get no answer at all,
	// so metal can share a network with machines that are not its own.
	IgnoreUnknown bool
	RateLimit     RateLimit
	// HTTPBaseURL is metal's HTTP server ("http://192.0.2.1:8080"); iPXE
	// clients are sent to HTTPBaseURL + "/ipxe/<mac>", their script.
	HTTPBaseURL string
	// TFTPServer is the next-server (siaddr); default ServerIP.
	TFTPServer netip.Addr
	BootFiles  BootFiles
	// DeclineTime is how long an address a client declined (found in use)
	// is kept out of the pool; default 10 minutes.
	DeclineTime time.Duration
	// OfferHold is how long an offered address stays reserved for the MAC
	// it was offered to, waiting for its REQUEST; default 30 seconds.
	OfferHold time.Duration
	// Observe, when set, is told of every packet the server read: its
	// message type ("discover", "request", ...; "malformed") and the
	// result ("offer", "ack", "nak", "ignored", "error"); a reply the
	// kernel then refuses to send is told again as "unsent", and each
	// copy of a reply sent again during a flood as "ack-repeat" or
	// "offer-repeat". Metrics count
	// them; it runs on the packet's worker, so it must be quick.
	Observe func(msgType, result string)
}

const (
	maxPool            = 1 << 16
	defaultLeaseTime   = time.Hour
	defaultDeclineTime = 10 * time.Minute
	defaultOfferHold   = 30 * time.Second
	defaultBurst       = 10
	defaultEvery       = 500 * time.Millisecond
	defaultMaxTracked  = 4096
	defaultPoolBurst   = 64
	defaultPoolEvery   = time.Second
)

// withDefaults checks c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Mode == "" {
		c.Mode = ModeFull
	}
	if c.Mode != ModeFull && c.Mode != ModeProxy {
		errs = append(errs, fmt.Errorf("mode %q: want %q or %q", c.Mode, ModeFull, ModeProxy))
	}
	if !c.ServerIP.Is4() {
		errs = append(errs, fmt.Errorf("server ip %v: want an IPv4 address", c.ServerIP))
	}
	if !c.TFTPServer.IsValid() {
		c.TFTPServer = c.ServerIP
	} else if !c.TFTPServer.Is4() {
		errs = append(errs, fmt.Errorf("tftp server %v: want an IPv4 address", c.TFTPServer))
	}
	u, err := url.Parse(c.HTTPBaseURL)
	switch {
	case c.HTTPBaseURL == "":
		errs = append(errs, errors.New("http base url: missing (iPXE clients need their script URL)"))
	case err != nil:
		errs = append(errs, fmt.Errorf("http base url: %w", err))
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("http base url %q: want http://host[:port]", c.HTTPBaseURL))
	}
	c.HTTPBaseURL = strings.TrimSuffix(c.HTTPBaseURL, "/")
	if c.BootFiles.BIOS == "" {
		c.BootFiles.BIOS = "undionly.kpxe"
	}
	if c.BootFiles.UEFI == "" {
		c.BootFiles.UEFI = "ipxe.efi"
	}
	if c.BootFiles.HTTPBoot == "" {
		c.BootFiles.HTTPBoot = c.HTTPBaseURL + "/boot/" + strings.TrimPrefix(c.BootFiles.UEFI, "/")
	}
	if c.BootFiles.SecureBoot == "" {
		c.BootFiles.SecureBoot = "shimx64.efi"
	}
	if c.DeclineTime <= 0 {
		c.DeclineTime = defaultDeclineTime
	}
	if c.OfferHold <= 0 {
		c.OfferHold = defaultOfferHold
	}
	if c.RateLimit.Burst <= 0 {
		c.RateLimit.Burst = defaultBurst
	}
	if c.RateLimit.Every <= 0 {
		c.RateLimit.Every = defaultEvery
	}
	if c.RateLimit.MaxTracked <= 0 {
		c.RateLimit.MaxTracked = defaultMaxTracked
	}
	if c.RateLimit.PoolBurst <= 0 {
		c.RateLimit.PoolBurst = defaultPoolBurst
	}
	if c.RateLimit.PoolEvery <= 0 {
		c.RateLimit.PoolEvery = defaultPoolEvery
	}
	if c.Mode == ModeFull && len(c.Subnets) == 0 {
		errs = append(errs, errors.New("subnets: full mode needs at least one"))
	}
	subnets := make([]Subnet, len(c.Subnets))
	for i, s := range c.Subnets {
		s, err := s.withDefaults()
		if err != nil {
			errs = append(errs, fmt.Errorf("subnet %v: %w", c.Subnets[i].CIDR, err))
		}
		for _, prev := range subnets[:i] {
			if prev.CIDR.Overlaps(s.CIDR) {
				errs = append(errs, fmt.Errorf("subnet %v overlaps subnet %v", s.CIDR, prev.CIDR))
			}
		}
		subnets[i] = s
	}
	c.Subnets = subnets
	return c, errors.Join(errs...)
}

func (s Subnet) withDefaults() (Subnet, error) {
	var errs []error
	if !s.CIDR.IsValid() || !s.CIDR.Addr().Is4() || s.CIDR.Bits() > 30 {
		return s, fmt.Errorf("cidr: want an IPv4 prefix of /30 or larger")
	}
	if s.CIDR != s.CIDR.Masked() {
		errs = append(errs, fmt.Errorf("cidr %v has host bits set (did you mean %v?)", s.CIDR, s.CIDR.Masked()))
		s.CIDR = s.CIDR.Masked()
	}
	if s.Gateway.IsValid() && !s.CIDR.Contains(s.Gateway) {
		errs = append(errs, fmt.Errorf("gateway %v is outside the subnet", s.Gateway))
	}
	for _, d := range s.DNS {
		if !d.Is4() {
			errs = append(errs, fmt.Errorf("dns %v: want an IPv4 address", d))
		}
	}
	if s.PoolStart.IsValid() != s.PoolEnd.IsValid() {
		errs = append(errs, errors.New("pool: give both start and end, or neither"))
	} else if s.PoolStart.IsValid() {
		switch {
		case !s.CIDR.Contains(s.PoolStart) || !s.CIDR.Contains(s.PoolEnd):
			errs = append(errs, fmt.Errorf("pool %v-%v is not inside the subnet", s.PoolStart, s.PoolEnd))
		case s.PoolEnd.Less(s.PoolStart):
			errs = append(errs, fmt.Errorf("pool %v-%v ends before it starts", s.PoolStart, s.PoolEnd))
		case addrDiff(s.PoolStart, s.PoolEnd) >= maxPool:
			// Allocation scans the pool; keep that scan short.
			errs = append(errs, fmt.Errorf("pool %v-%v: more than %d addresses", s.PoolStart, s.PoolEnd, maxPool))
		}
	}
	if s.MTU != 0 && (s.MTU < 68 || s.MTU > 65535) {
		errs = append(errs, fmt.Errorf("mtu %d: want 68-65535", s.MTU))
	}
	for _, o := range s.Options {
		if o.Code == 0 || o.Code == 255 || len(o.Value) > 255 {
			errs = append(errs, fmt.Errorf("option %d: want a code 1-254 and at most 255 bytes", o.Code))
		}
	}
	for _, r := range s.Relays {
		if !r.Is4() {
			errs = append(errs, fmt.Errorf("relay %v: want an IPv4 address", r))
		}
	}
	if s.LeaseTime <= 0 {
		s.LeaseTime = defaultLeaseTime
	}
	if s.LeaseTime < 10*time.Second {
		errs = append(errs, fmt.Errorf("lease time %v: want at least 10s", s.LeaseTime))
	}
	return s, errors.Join(errs...)
}

// addrDiff returns b - a for IPv4 addresses.
func addrDiff(a, b netip.Addr) uint32 {
	x, y := a.As4(), b.As4()
	u := func(v [4]byte) uint32 { return uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3]) }
	return u(y) - u(x)
}
