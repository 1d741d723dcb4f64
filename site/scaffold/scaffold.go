// Package scaffold writes a first site file for a network: the site, its
// network with a DHCP pool, a rollout, and the BMCs a scan found as
// commented machine blocks to fill in. `metal init` renders it; the file
// it writes validates as it is.
package scaffold

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"text/template"

	"github.com/metal-dev/metal/bmc/scan"
)

// Options describe the network metal serves.
type Options struct {
	// Name is the site's name (default "site").
	Name string
	// Network is the network block's name (default "boot").
	Network string
	// Interface is the server's interface on the boot network.
	Interface string
	// Subnet is the boot network.
	Subnet netip.Prefix
	// ServerIP is metal's own address on it (HTTP listens there); default
	// Gateway.
	ServerIP netip.Addr
	// Gateway is the machines' router (default the subnet's first host).
	Gateway netip.Addr
	// DNS servers (default the gateway).
	DNS []netip.Addr
	// PoolStart and PoolEnd bound the addresses of machines not in the
	// file (default the subnet's last quarter).
	PoolStart, PoolEnd netip.Addr
	// Mode is "dhcp" (default) or "proxy" (beside another DHCP server).
	Mode string
	// Port is the HTTP port (default 8080).
	Port int
	// State is the state store's URL (default file://.metal/state.db).
	State string
	// BMCSubnet is where the BMCs live, for the comment; BMCs are what a
	// scan of it found.
	BMCSubnet netip.Prefix
	BMCs      []scan.Found
	// Command is the command line that wrote the file, for its header.
	Command string
}

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// withDefaults checks o and fills in what was left out.
func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = "site"
	}
	if o.Network == "" {
		o.Network = "boot"
	}
	for what, v := range map[string]string{"site name": o.Name, "network name": o.Network} {
		if !namePattern.MatchString(v) {
			return o, fmt.Errorf("%s %q: use lowercase letters, digits and dashes, starting with a letter", what, v)
		}
	}
	if !o.Subnet.IsValid() || !o.Subnet.Addr().Is4() {
		return o, errors.New("the boot network's subnet is missing or not IPv4 (--subnet 10.0.0.0/24)")
	}
	o.Subnet = o.Subnet.Masked()
	if o.Subnet.Bits() > 29 {
		return o, fmt.Errorf("subnet %s is too small for servers and a pool: give a /29 or larger", o.Subnet)
	}
	if o.Interface == "" {
		return o, errors.New("the server's interface on the boot network is missing (--interface eno1)")
	}
	first := o.Subnet.Addr().Next()
	if !o.Gateway.IsValid() {
		o.Gateway = first
	}
	if !o.ServerIP.IsValid() {
		o.ServerIP = o.Gateway
	}
	if len(o.DNS) == 0 {
		o.DNS = []netip.Addr{o.Gateway}
	}
	size := 1 << (32 - o.Subnet.Bits())
	if !o.PoolStart.IsValid() {
		o.PoolStart = nth(o.Subnet, size-size/4)
	}
	if !o.PoolEnd.IsValid() {
		o.PoolEnd = nth(o.Subnet, size-2)
	}
	for what, a := range map[string]netip.Addr{"gateway": o.Gateway, "server address": o.ServerIP, "pool start": o.PoolStart, "pool end": o.PoolEnd} {
		if !o.Subnet.Contains(a) {
			return o, fmt.Errorf("%s %s is outside the subnet %s", what, a, o.Subnet)
		}
	}
	if o.PoolEnd.Less(o.PoolStart) {
		return o, fmt.Errorf("the pool %s-%s ends before it starts", o.PoolStart, o.PoolEnd)
	}
	for _, a := range []netip.Addr{o.Gateway, o.ServerIP} {
		if !a.Less(o.PoolStart) && !o.PoolEnd.Less(a) {
			return o, fmt.Errorf("the pool %s-%s holds %s; give one that does not (--pool)", o.PoolStart, o.PoolEnd, a)
		}
	}
	switch o.Mode {
	case "":
		o.Mode = "dhcp"
	case "dhcp", "proxy":
	default:
		return o, fmt.Errorf("mode %q: want dhcp or proxy", o.Mode)
	}
	if o.Port == 0 {
		o.Port = 8080
	}
	if o.State == "" {
		o.State = "file://.metal/state.db"
	}
	return o, nil
}

// nth is the subnet's address i (0 is the network address).
func nth(p netip.Prefix, i int) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// machine is a found BMC as the template writes it.
type machine struct {
	Name, Protocol, Address, Product, IP string
}

type data struct {
	Options
	DNSList  string
	Machines []machine
}

// Render returns the site file for o.
func Render(o Options) ([]byte, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	dns := make([]string, len(o.DNS))
	for i, a := range o.DNS {
		dns[i] = fmt.Sprintf("%q", a.String())
	}
	d := data{Options: o, DNSList: strings.Join(dns, ", ")}
	// Machines get addresses below the pool, from the 10th host on.
	next := nth(o.Subnet, 10)
	for _, b := range o.BMCs {
		for next == o.Gateway || next == o.ServerIP {
			next = next.Next()
		}
		ip := ""
		if next.Less(o.PoolStart) {
			ip = next.String()
			next = next.Next()
		}
		d.Machines = append(d.Machines, machine{
			Name:     "m-" + strings.ReplaceAll(b.Addr.String(), ".", "-"),
			Protocol: b.Protocol, Address: b.Address, Product: b.Product, IP: ip,
		})
	}
	var out bytes.Buffer
	if err := siteTemplate.Execute(&out, d); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

var siteTemplate = template.Must(template.New("site").Parse(`# A site for metal{{if .Command}}, written by ` + "`{{.Command}}`" + `{{end}}.
#
#   metal validate FILE     check it (touches nothing)
#   metal plan FILE         what metal would do
#   metal serve FILE        netboot the network (as a service: systemctl start metal)
#
# man metal, and the examples in /usr/share/doc/metal/examples (or
# hcl-examples/ in metal's source), say what else a site file can hold.

# state is the state store: one embedded file, or etcd for several metal
# servers ("etcd://10.0.0.5:2379,10.0.0.6:2379/metal"). listen is where
# machines fetch iPXE scripts, kernels and images; the console, API and
# /metrics are on metal serve --api-listen (127.0.0.1:9090 by default).
# Machines not in this file get a pool address and nothing to boot;
# unknown_machines = "discover" boots metal's agent on them, which reports
# their hardware (MACs included) to metal machines.
site "{{.Name}}" {
  state  = "{{.State}}"
  listen = "{{.ServerIP}}:{{.Port}}"
  # unknown_machines = "discover"
}

# The boot network. pool holds the addresses of machines not declared
# below; mode "proxy" answers only PXE clients, beside another DHCP server.
network "{{.Network}}" {
  interface = "{{.Interface}}"
  subnet    = "{{.Subnet}}"
  gateway   = "{{.Gateway}}"
  dns       = [{{.DNSList}}]
  pool      = "{{.PoolStart}}-{{.PoolEnd}}"
  mode      = "{{.Mode}}"
}

# An image to install. kernel/initrd boot an installer; disk is written
# by metal's agent (http, https, file or sftp; .zst and .xz decompressed).
# image "debian-12" {
#   disk     = "https://images.example/debian-12.raw.zst"
#   checksum = "sha256:..."
#   cmdline  = "console=ttyS0"
# }
{{if .Machines}}
# The BMCs a scan of {{.BMCSubnet}} found. To manage a machine, uncomment it,
# give it the MAC of its boot NIC (unknown_machines = "discover" above
# finds it), an image, and the BMC password in METAL_VAR_bmc_password.
#
# variable "bmc_password" {
#   sensitive = true
# }
{{range .Machines}}
# machine "{{.Name}}" {{"{"}}{{if .Product}}                  # {{.Product}}{{end}}
#   mac   = "02:00:00:00:00:00"   # the boot NIC's MAC
{{- if .IP}}
#   ip    = "{{.IP}}"
{{- end}}
#   image = image.debian-12
#   power = "on"
#   bmc {
#     protocol = "{{.Protocol}}"
#     address  = "{{.Address}}"
#     username = "admin"
#     password = var.bmc_password
#   }
# }
{{end}}{{else}}{{if .BMCSubnet.IsValid}}
# A scan of {{.BMCSubnet}} found no BMC (Redfish on https or http, IPMI on
# UDP 623).
{{end}}
# A machine, with its BMC:
# variable "bmc_password" {
#   sensitive = true
# }
#
# machine "web-01" {
#   mac   = "52:54:00:00:01:01"
#   ip    = "{{.Machine10}}"
#   image = image.debian-12
#   power = "on"
#   bmc {
#     protocol = "redfish"                # or "ipmi"
#     address  = "https://10.0.1.1"
#     username = "admin"
#     password = var.bmc_password        # METAL_VAR_bmc_password
#   }
# }
{{end}}
# How a change rolls out: one machine alone first, then batches; the
# rollout halts at the first failure.
rollout {
  canary       = 1
  batch_size   = 5
  max_failures = 0
}
`))

// Machine10 is the example machine's address: the subnet's 10th host.
func (d data) Machine10() string { return nth(d.Subnet, 10).String() }
