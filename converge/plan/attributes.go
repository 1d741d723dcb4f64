package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/metal-dev/metal/site"
)

// MachineAttributes flattens what the site declares for m into the
// attributes a plan compares. An image contributes its name and a digest of
// its sources, so changing the image's content reprovisions its machines.
func MachineAttributes(s *site.Site, m *site.Machine) Attributes {
	a := make(Attributes, 12+len(m.Labels))
	set := func(name, v string) {
		if v != "" {
			a[name] = Value{Text: v}
		}
	}
	set("mac", m.MAC.String())
	if m.IP.IsValid() {
		set("ip", m.IP.String())
	} else {
		set("ip", "(from pool)")
	}
	if m.IP6.IsValid() {
		set("ip6", m.IP6.String())
	}
	set("hostname", m.Hostname)
	set("network", m.Network)
	set("power", m.Power)
	set("disk", m.Disk)
	set("image", m.Image)
	if im := s.Image(m.Image); im != nil {
		set("image.source", imageDigest(im))
	}
	for k, v := range m.Labels {
		set("labels."+k, v)
	}
	if len(m.SSHAuthorizedKeys) > 0 {
		set("ssh_authorized_keys", strconv.Itoa(len(m.SSHAuthorizedKeys))+" keys, "+short(strings.Join(m.SSHAuthorizedKeys, "\n")))
	}
	if m.UserData != "" {
		set("user_data", short(m.UserData))
	}
	set("boot_mode", m.BootMode)
	for k, v := range m.BIOS {
		a[BIOSPrefix+k] = Value{Text: v}
	}
	for _, f := range m.Firmware {
		a[FirmwarePrefix+f.Component] = Value{Text: f.Version}
	}
	for i := range m.RAID {
		a[RAIDPrefix+m.RAID[i].Name] = Value{Text: m.RAID[i].Layout()}
	}
	if b := m.BMC; b != nil {
		set("bmc.protocol", b.Protocol)
		set("bmc.address", b.Address)
		set("bmc.username", b.Username)
		if b.Password != "" {
			// Only that a password is set: not even a digest of it leaves
			// the process. A new password needs no action on the machine,
			// since every BMC call reads it from the site.
			a["bmc.password"] = Value{Text: "(set)", Sensitive: true}
		}
		if b.InsecureTLS {
			set("bmc.insecure_tls", "true")
		}
		set("bmc.ca_file", b.CAFile)
	}
	for name := range m.Sensitive {
		if v, ok := a[name]; ok && !v.Sensitive {
			a[name] = Value{Text: hidden(v.Text), Sensitive: true}
		}
	}
	return a
}

// hiddenPrefix starts the text of a value computed from a sensitive
// variable: a digest, so a change is still seen, and the mark, so the
// inventory's copy (Strings, FromStrings) stays marked.
const hiddenPrefix = "(sensitive "

func hidden(v string) string { return hiddenPrefix + short(v) + ")" }

// BIOSPrefix starts the names of BIOS attributes ("bios.ProcVirtualization").
const BIOSPrefix = "bios."

// FirmwarePrefix starts the names of firmware versions ("firmware.BIOS").
const FirmwarePrefix = "firmware."

// RAIDPrefix starts the names of RAID volumes ("raid.system").
const RAIDPrefix = "raid."

// IsHardware reports whether attribute name is a hardware setting that
// its BMC applies (boot_mode, bios.*, firmware.*, raid.*).
func IsHardware(name string) bool {
	return name == "boot_mode" || strings.HasPrefix(name, BIOSPrefix) || strings.HasPrefix(name, FirmwarePrefix) || strings.HasPrefix(name, RAIDPrefix)
}

// imageDigest names the exact content of an image: its sources and
// checksums.
func imageDigest(im *site.Image) string {
	var b strings.Builder
	for _, src := range append([]site.Source{im.Kernel, im.Disk}, im.Initrd...) {
		b.WriteString(src.URL)
		b.WriteByte(' ')
		b.WriteString(src.Checksum)
		b.WriteByte('\n')
	}
	b.WriteString(im.Cmdline)
	return short(b.String())
}

// short is a 12-hex-digit digest of s.
func short(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:6])
}

// sensitiveAttrs are the attributes whose value is never shown.
var sensitiveAttrs = map[string]bool{"bmc.password": true}

// Strings returns the attributes as the inventory keeps them
// (inventory.Machine.Applied): names to text. Sensitive values are only
// ever placeholders such as "(set)" or digests, so nothing secret is
// stored.
func (a Attributes) Strings() map[string]string {
	out := make(map[string]string, len(a))
	for k, v := range a {
		out[k] = v.Text
	}
	return out
}

// FromStrings is the inverse of Strings.
func FromStrings(m map[string]string) Attributes {
	out := make(Attributes, len(m))
	for k, v := range m {
		out[k] = Value{Text: v, Sensitive: sensitiveAttrs[k] || strings.HasPrefix(v, hiddenPrefix)}
	}
	return out
}
