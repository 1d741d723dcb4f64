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
  listen = "{{.ServerIP}}:{{.HTTPPort}}"
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

# The bootable test disk image: it prints its marker on the serial console
# and phones home to metal as cloud-init would (the URL and its secret are
# in the NoCloud seed metal writes beside it): only then is a VM provisioned.
image "lab-os" {
  disk     = "{{.Image}}"
  checksum = "{{.ImageChecksum}}"{{if .OSReadyTimeout}}
  ready_timeout = "{{.OSReadyTimeout}}"{{end}}
}
{{range .VMs}}
machine "{{.Name}}" {
  mac    = "{{.MAC}}"
  ip     = "{{.IP}}"
  image  = image.lab-os
  power  = "on"
  disk   = "/dev/vda"
  labels = { firmware = "{{.Firmware}}" }{{if eq .Protocol "redfish"}}
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
	// The lab's hardware lines (hardware.go).
	HardwareMark, BIOSAttribute, BIOSValue            string
	FirmwareComponent, FirmwareVersion, FirmwareImage string
	FirmwareChecksum                                  string
}

// renderSite returns the lab's site file; firmwareChecksum is the lab's
// BIOS image's (writeFirmware).
func renderSite(st *State, password, imageChecksum, firmwareChecksum string) ([]byte, error) {
	var b bytes.Buffer
	err := siteTemplate.Execute(&b, siteData{
		State: st, Subnet: subnet, PoolStart: poolStart, PoolEnd: poolEnd,
		HTTPPort: httpPort, Password: password, ImageChecksum: imageChecksum,
		HardwareMark: HardwareMark, BIOSAttribute: BIOSAttribute, BIOSValue: BIOSValue,
		FirmwareComponent: FirmwareComponent, FirmwareVersion: FirmwareVersion,
		FirmwareImage: firmwareFile, FirmwareChecksum: firmwareChecksum,
	})
	if err != nil {
		return nil, fmt.Errorf("render site file: %w", err)
	}
	return b.Bytes(), nil
}
