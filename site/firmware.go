package site

import (
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Firmware is one firmware component a machine must run, and the image
// that installs it:
//
//	firmware "BIOS" {
//	  version  = "1.17.0"
//	  image    = "firmware/bios-1.17.0.bin"   # a local file, or http(s)://
//	  checksum = "sha256:…"
//	}
//
// The label is the component as the BMC's firmware inventory names it
// (its Id, Name or SoftwareId). metal serves the image from its own HTTP
// server and has the BMC install it (Redfish UpdateService).
type Firmware struct {
	Component string
	Version   string
	Image     Source
	DeclRange hcl.Range
	ranges    map[string]hcl.Range
}

// Range returns the source range of one of the block's attributes, or its
// header.
func (f *Firmware) Range(attr string) hcl.Range { return rangeOr(f.ranges, attr, f.DeclRange) }

var firmwareSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "version", Required: true}, {Name: "image", Required: true}, {Name: "checksum", Required: true},
}}

// decodeFirmware evaluates m's firmware blocks for one instance.
func decodeFirmware(e *evaluator, m *Machine, blocks []subBlock) {
	for _, fb := range blocks {
		attrs := fb.content.Attributes
		f := Firmware{Component: fb.block.Labels[0], DeclRange: fb.block.DefRange, ranges: map[string]hcl.Range{}}
		for name, a := range attrs {
			f.ranges[name] = a.Expr.Range()
		}
		f.Version, _, _ = e.str(attrs["version"])
		f.Image.URL, _, _ = e.str(attrs["image"])
		f.Image.Checksum, _, _ = e.str(attrs["checksum"])
		m.Firmware = append(m.Firmware, f)
	}
}

// validateFirmware checks the shapes of a machine's firmware blocks;
// whether its BMC lists the component is for plan to ask the BMC.
func validateFirmware(m *Machine) hcl.Diagnostics {
	var diags hcl.Diagnostics
	seen := map[string]*Firmware{}
	for i := range m.Firmware {
		f := &m.Firmware[i]
		if strings.TrimSpace(f.Component) == "" {
			diags = append(diags, errorAt(f.DeclRange, "Invalid firmware component",
				"Machine %q: a firmware block's label names the component as the BMC's firmware inventory does, such as \"BIOS\" or \"BMC\".", m.Name))
			continue
		}
		key := strings.ToLower(f.Component)
		if prev, ok := seen[key]; ok {
			diags = append(diags, errorAt(f.DeclRange, "Duplicate firmware component",
				"Machine %q: firmware %q is already declared at %s.", m.Name, f.Component, where(prev.DeclRange)))
			continue
		}
		seen[key] = f
		if strings.TrimSpace(f.Version) == "" {
			diags = append(diags, errorAt(f.Range("version"), "Missing firmware version",
				"Machine %q: firmware %q needs the version its image installs, as the BMC will report it.", m.Name, f.Component))
		}
		if f.Image.URL == "" {
			diags = append(diags, errorAt(f.Range("image"), "Missing firmware image",
				"Machine %q: firmware %q needs an image: a local file, or an http(s) URL.", m.Name, f.Component))
		}
		if !checksumRe.MatchString(f.Image.Checksum) {
			diags = append(diags, errorAt(f.Range("checksum"), "Malformed checksum",
				"Machine %q: firmware %q: checksum must be \"sha256:\" and 64 hex digits, or \"sha512:\" and 128, in lower case (sha256sum prints it); metal never flashes an image it has not verified.", m.Name, f.Component))
		}
	}
	if len(m.Firmware) == 0 {
		return diags
	}
	switch {
	case m.BMC == nil:
		diags = append(diags, errorAt(m.Firmware[0].DeclRange, "Firmware without a BMC",
			"Machine %q declares firmware, which metal installs through the machine's BMC; add a bmc block with protocol = \"redfish\".", m.Name))
	case m.BMC.Protocol == ProtocolIPMI:
		diags = append(diags, errorAt(m.Firmware[0].DeclRange, "Firmware updates need Redfish",
			"Machine %q declares firmware, but IPMI has no standard way to update it; use protocol = \"redfish\" (or \"auto\") if the BMC speaks it.", m.Name))
	}
	return diags
}
