// Package dhcpopt is the catalogue of DHCPv4 options a site may set by
// name or code, each with the type its value is checked and encoded by.
// The site language validates with it; the DHCP server sends the bytes.
package dhcpopt

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Type is how an option's value is written and encoded.
type Type string

const (
	IP     Type = "ip"     // one IPv4 address
	IPs    Type = "ips"    // a list of IPv4 addresses
	Text   Type = "text"   // a string, as is
	U8     Type = "u8"     // a whole number 0-255
	U16    Type = "u16"    // a whole number 0-65535
	U32    Type = "u32"    // a whole number 0-4294967295
	Bool   Type = "bool"   // true or false
	Names  Type = "names"  // a list of domain names (RFC 3397 search list)
	Opaque Type = "opaque" // any bytes: text, or "hex:0a0b..."
)

// Def is one option the catalogue knows.
type Def struct {
	Code uint8
	Name string
	Type Type
}

var defs = []Def{
	{2, "time-offset", U32},
	{4, "time-servers", IPs},
	{7, "log-servers", IPs},
	{19, "ip-forwarding", Bool},
	{23, "default-ip-ttl", U8},
	{28, "broadcast-address", IP},
	{40, "nis-domain", Text},
	{41, "nis-servers", IPs},
	{44, "netbios-name-servers", IPs},
	{66, "tftp-server-name", Text},
	{69, "smtp-servers", IPs},
	{100, "pcode", Text},
	{101, "tcode", Text},
	{119, "domain-search", Names},
	{150, "tftp-server-address", IPs},
	{252, "wpad-url", Text},
}

// managed are the options metal sets itself, and where a site sets them.
var managed = map[uint8]string{
	1: "the network's subnet", 3: "the network's gateway", 6: "the network's dns",
	12: "the machine's hostname", 15: "the network's domain", 43: "the boot file (metal sets it for PXE)",
	50: "the client", 51: "the network's lease_time", 53: "the protocol", 54: "the server",
	55: "the client", 58: "the network's lease_time", 59: "the network's lease_time",
	26: "the network's mtu", 42: "the network's ntp",
	60: "the boot file (metal sets it for PXE)", 61: "the client",
	67: "the boot file (metal sets it)", 82: "the relay", 97: "the client", 121: "the network's routes",
	255: "the protocol", 0: "the protocol",
}

// Lookup finds an option by name or code ("ntp-servers", "42", or any
// code 1-254 the catalogue does not know, which then takes Opaque).
func Lookup(key string) (Def, error) {
	if n, err := strconv.Atoi(key); err == nil {
		if n < 1 || n > 254 {
			return Def{}, fmt.Errorf("option code %d: want 1-254", n)
		}
		for _, d := range defs {
			if int(d.Code) == n {
				return d, checkManaged(d)
			}
		}
		d := Def{Code: uint8(n), Name: key, Type: Opaque}
		return d, checkManaged(d)
	}
	for _, d := range defs {
		if d.Name == key {
			return d, checkManaged(d)
		}
	}
	return Def{}, fmt.Errorf("unknown option %q: give its code (1-254) or one of %s", key, strings.Join(KnownNames(), ", "))
}

func checkManaged(d Def) error {
	if where, ok := managed[d.Code]; ok && where != "" {
		return fmt.Errorf("option %d is set by metal from %s, not in options", d.Code, where)
	}
	return nil
}

// KnownNames lists the names the catalogue knows, sorted.
func KnownNames() []string {
	var out []string
	for _, d := range defs {
		out = append(out, d.Name)
	}
	sort.Strings(out)
	return out
}

// Encode checks a value written in the site (every value is written as a
// string; lists as comma-separated strings) against d's type and returns
// the option's bytes.
func Encode(d Def, v string) ([]byte, error) {
	switch d.Type {
	case IP, IPs:
		var out []byte
		parts := strings.Split(v, ",")
		if d.Type == IP && len(parts) != 1 {
			return nil, fmt.Errorf("option %s: want one IPv4 address, got %q", d.Name, v)
		}
		for _, p := range parts {
			a, err := netip.ParseAddr(strings.TrimSpace(p))
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("option %s: %q is not an IPv4 address", d.Name, strings.TrimSpace(p))
			}
			b := a.As4()
			out = append(out, b[:]...)
		}
		return out, nil
	case U8, U16, U32:
		bits := map[Type]int{U8: 8, U16: 16, U32: 32}[d.Type]
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, bits)
		if err != nil {
			return nil, fmt.Errorf("option %s: want a whole number of %d bits, got %q", d.Name, bits, v)
		}
		out := make([]byte, bits/8)
		for i := range out {
			out[len(out)-1-i] = byte(n >> (8 * i))
		}
		return out, nil
	case Bool:
		switch v {
		case "true":
			return []byte{1}, nil
		case "false":
			return []byte{0}, nil
		}
		return nil, fmt.Errorf("option %s: want true or false, got %q", d.Name, v)
	case Names:
		var out []byte
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSuffix(strings.TrimSpace(name), ".")
			if name == "" {
				return nil, fmt.Errorf("option %s: an empty domain name in %q", d.Name, v)
			}
			for _, label := range strings.Split(name, ".") {
				if label == "" || len(label) > 63 {
					return nil, fmt.Errorf("option %s: %q is not a domain name", d.Name, name)
				}
				out = append(out, byte(len(label)))
				out = append(out, label...)
			}
			out = append(out, 0)
		}
		if len(out) > 255 {
			return nil, fmt.Errorf("option %s: longer than 255 bytes", d.Name)
		}
		return out, nil
	case Text, Opaque:
		var out []byte
		if h, ok := strings.CutPrefix(v, "hex:"); ok && d.Type == Opaque {
			b, err := hex.DecodeString(strings.ReplaceAll(h, ":", ""))
			if err != nil {
				return nil, fmt.Errorf("option %s: %q is not hex bytes", d.Name, v)
			}
			out = b
		} else {
			out = []byte(v)
		}
		if len(out) == 0 || len(out) > 255 {
			return nil, fmt.Errorf("option %s: want 1-255 bytes, got %d", d.Name, len(out))
		}
		return out, nil
	}
	return nil, fmt.Errorf("option %s: unknown type %q", d.Name, d.Type)
}

// Route is one classless static route (option 121, RFC 3442).
type Route struct {
	Dest netip.Prefix
	Via  netip.Addr
}

// EncodeRoutes encodes option 121: per route the prefix length, the
// significant octets of the destination, then the router.
func EncodeRoutes(routes []Route) []byte {
	var out []byte
	for _, r := range routes {
		bits := r.Dest.Bits()
		a := r.Dest.Masked().Addr().As4()
		out = append(out, byte(bits))
		out = append(out, a[:(bits+7)/8]...)
		v := r.Via.As4()
		out = append(out, v[:]...)
	}
	return out
}
