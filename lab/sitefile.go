package lab

import (
	"bytes"
	"fmt"
	"text/template"
)

// siteTemplate is the lab's site file. Paths are relative to it, so the lab
// directory can be looked at (and the site validated) from anywhere.
var siteTemplate = template.Must(template.New("site").Parse(`# Written by ` + "`metal lab up`" + ` for the lab in {{.Dir}}.
# Everything below lives inside the network namespace {{.Netns}}:
#   metal lab apply --dir {{.Dir}}     provision every VM
#   metal lab status --dir {{.Dir}}    VMs, BMCs, serial consoles
#   metal lab down --dir {{.Dir}}      remove the lab

site "lab" {
  state  = "file://state/metal.db"
  listen = "{{.ServerIP}}:{{.HTTPPort}}"{{if .SecureBootDir}}
  # Debian's signed shim and network GRUB, for the Secure Boot VM.
  secureboot_dir = "{{.SecureBootDir}}"{{end}}
}

# Generated for this lab; the BMCs were started with it.
variable "bmc_password" {
  sensitive = true
  default   = "{{.Password}}"
}

network "lab" {
  interface  = "{{.Bridge}}"
  subnet     = "{{.Subnet}}"
  gateway    = "{{.ServerIP}}"
  dns        = ["{{.ServerIP}}"]
  domain     = "lab.test"
  pool       = "{{.PoolStart}}-{{.PoolEnd}}"
  lease_time = "1h"
}
{{if .Uses "virtual-media"}}
# A routed segment without DHCP: the lab's namespace is its router, metal
# one hop away on the network above.
network "{{.RoutedNet}}" {
  subnet  = "{{.RoutedSubnet}}"
  gateway = "{{.RoutedGateway}}"
  mode    = "off"
}
{{end}}{{if .Uses "ipv6"}}
# An IPv6-only link: metal advertises the prefix and answers DHCPv6.
network "{{.V6Net}}" {
  interface = "{{.V6Bridge}}"
  subnet6   = "{{.V6Subnet}}"
}
{{end}}
# The bootable test disk image: it prints its marker on the serial console
# and phones home to metal as cloud-init would (the URL and its secret are
# in the NoCloud seed metal writes beside it): only then is a VM provisioned.
image "lab-os" {
  disk     = "{{.Image}}"
  checksum = "{{.ImageChecksum}}"{{if .OSReadyTimeout}}
  ready_timeout = "{{.OSReadyTimeout}}"{{end}}
}
{{if .SignedImage}}
# The same image, booting through Debian's signed shim and GRUB.
image "lab-os-signed" {
  disk     = "{{.SignedImage}}"
  checksum = "{{.SignedChecksum}}"{{if .OSReadyTimeout}}
  ready_timeout = "{{.OSReadyTimeout}}"{{end}}
}
{{end}}{{range .VMs}}
machine "{{.Name}}" {{"{"}}{{if .Note}}
  # {{.Note}}{{end}}
  mac    = "{{.MAC}}"{{if .IP}}
  ip     = "{{.IP}}"{{end}}{{if .IP6}}
  ip6    = "{{.IP6}}"{{end}}{{if ne .Network "lab"}}
  network = "{{.Network}}"{{end}}{{if .SiteBoot}}
  boot   = "{{.SiteBoot}}"{{end}}
  image  = image.{{if .SecureBoot}}lab-os-signed{{else}}lab-os{{end}}
  power  = "on"
  disk   = "/dev/vda"
  labels = { firmware = "{{.Firmware}}"{{if .Note}}, boot_path = "{{.BootPath}}"{{end}} }{{if eq .Protocol "redfish"}}
  # Hardware as code through the virtual BMC: take the "#hw" off the lines
  # below, and metal plan shows a BIOS change and a firmware update; metal
  # lab apply makes them (no reinstall), and the next plan is empty.
  {{$.HardwareMark}}bios = { {{$.BIOSAttribute}} = "{{$.BIOSValue}}" }
  {{$.HardwareMark}}firmware "{{$.FirmwareComponent}}" {
  {{$.HardwareMark}}  version  = "{{$.FirmwareVersion}}"
  {{$.HardwareMark}}  image    = "{{$.FirmwareImage}}"
  {{$.HardwareMark}}  checksum = "{{$.FirmwareChecksum}}"
  {{$.HardwareMark}}}{{end}}
  bmc {
    protocol = "{{.Protocol}}"
    address  = "{{.BMCAddress}}"
    username = "{{$.Username}}"
    password = var.bmc_password
  }
}
{{end}}
{{if .Canary}}# A canary first: the rest only once it came up.
rollout {
  canary       = {{.Canary}}
  batch_size   = {{len .VMs}}{{else}}# Every VM at once: a lab is small, and CI has time for one batch only.
rollout {
  canary       = 0
  batch_size   = {{len .VMs}}{{end}}
  max_failures = 0
  stagger      = "0s"
}
`))

// siteData is what the template needs beyond the lab's state.
type siteData struct {
	*State
	Subnet, PoolStart, PoolEnd string
	HTTPPort                   int
	Password                   string
	ImageChecksum              string
	SignedChecksum             string
	// The extra segments' (paths.go).
	RoutedNet, RoutedSubnet, RoutedGateway string
	V6Net, V6Bridge, V6Subnet              string
	// The lab's hardware lines (hardware.go).
	HardwareMark, BIOSAttribute, BIOSValue            string
	FirmwareComponent, FirmwareVersion, FirmwareImage string
	FirmwareChecksum                                  string
}

// renderSite returns the lab's site file; signedChecksum is the signed
// image's (when a VM boots with Secure Boot), firmwareChecksum the lab's
// BIOS image's (writeFirmware).
func renderSite(st *State, password, imageChecksum, signedChecksum, firmwareChecksum string) ([]byte, error) {
	var b bytes.Buffer
	err := siteTemplate.Execute(&b, siteData{
		State: st, Subnet: subnet, PoolStart: poolStart, PoolEnd: poolEnd,
		HTTPPort: httpPort, Password: password, ImageChecksum: imageChecksum, SignedChecksum: signedChecksum,
		RoutedNet: routedNet, RoutedSubnet: routedSubnet, RoutedGateway: routedGateway,
		V6Net: v6Net, V6Bridge: v6Bridge, V6Subnet: v6Subnet,
		HardwareMark: HardwareMark, BIOSAttribute: BIOSAttribute, BIOSValue: BIOSValue,
		FirmwareComponent: FirmwareComponent, FirmwareVersion: FirmwareVersion,
		FirmwareImage: firmwareFile, FirmwareChecksum: firmwareChecksum,
	})
	if err != nil {
		return nil, fmt.Errorf("render site file: %w", err)
	}
	return b.Bytes(), nil
}
