package site

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
)

// TestBIOSForARack sets BIOS attributes for a whole rack through locals
// and for_each, with one machine overriding one; numbers and booleans are
// kept as text.
func TestBIOSForARack(t *testing.T) {
	src := `site "t" {}
network "lan" {
  subnet = "192.0.2.0/24"
  mode   = "off"
}
locals {
  rack_bios = { ProcVirtualization = "Enabled", PxeRetries = 3, UsbPortsEnabled = false }
}
machine "web" {
  for_each  = { "web-1" = {}, "web-2" = { WorkloadProfile = "Performance" } }
  mac       = each.key == "web-1" ? "52:54:00:00:00:01" : "52:54:00:00:00:02"
  boot_mode = "uefi"
  bios      = merge(local.rack_bios, each.value)
  wipe      = each.key == "web-1" ? "secure" : "zero"
  bmc {
    address  = "http://192.0.2.100"
    username = "admin"
    password = "x"
  }
}
`
	res, diags := Load("site.hcl", []byte(src), Options{})
	if diags.HasErrors() {
		t.Fatal(hcl.Diagnostics(diags).Error())
	}
	got := map[string]map[string]string{}
	for _, m := range res.Site.Machines {
		if m.BootMode != BootModeUEFI {
			t.Errorf("%s: boot_mode %q", m.Name, m.BootMode)
		}
		if want := map[string]string{"web-1": "secure", "web-2": "zero"}[m.Name]; m.Wipe != want {
			t.Errorf("%s: wipe %q, want %q", m.Name, m.Wipe, want)
		}
		got[m.Name] = m.BIOS
	}
	want := map[string]map[string]string{
		"web-1": {"ProcVirtualization": "Enabled", "PxeRetries": "3", "UsbPortsEnabled": "false"},
		"web-2": {"ProcVirtualization": "Enabled", "PxeRetries": "3", "UsbPortsEnabled": "false", "WorkloadProfile": "Performance"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("bios (-want +got):\n%s", d)
	}
}

// TestFirmwareForARack declares firmware for a rack through for_each: the
// block is evaluated per machine, its version and image from each's value.
func TestFirmwareForARack(t *testing.T) {
	src := `site "t" {}
network "lan" {
  subnet = "192.0.2.0/24"
  mode   = "off"
}
machine "web" {
  for_each = { "web-1" = "1.17.0", "web-2" = "1.16.2" }
  mac      = each.key == "web-1" ? "52:54:00:00:00:01" : "52:54:00:00:00:02"
  firmware "BIOS" {
    version  = each.value
    image    = "firmware/bios-${each.value}.bin"
    checksum = "sha256:${sha256(each.value)}"
  }
  bmc {
    address  = "http://192.0.2.100"
    username = "admin"
    password = "x"
  }
}
`
	res, diags := Load("site.hcl", []byte(src), Options{})
	if diags.HasErrors() {
		t.Fatal(hcl.Diagnostics(diags).Error())
	}
	got := map[string]string{}
	for _, m := range res.Site.Machines {
		for _, f := range m.Firmware {
			got[m.Name+" "+f.Component] = f.Version + " " + f.Image.URL
		}
	}
	want := map[string]string{"web-1 BIOS": "1.17.0 firmware/bios-1.17.0.bin", "web-2 BIOS": "1.16.2 firmware/bios-1.16.2.bin"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("firmware (-want +got):\n%s", d)
	}
}
