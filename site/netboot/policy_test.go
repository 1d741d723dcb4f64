package netboot_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/site"
	"github.com/metal-dev/metal/site/netboot"
)

const src = `
site "t" {
  unknown_machines = "discover"
}
network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
  pool      = "192.0.2.200-192.0.2.250"
}
image "live" {
  kernel  = "boot/vmlinuz"
  initrd  = ["boot/initrd.img"]
  cmdline = "console=ttyS0"
}
image "remote" {
  kernel          = "http://198.51.100.7/vmlinuz"
  kernel_checksum = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
}
image "disk" {
  disk = "file:///srv/os.raw"
}
machine "live" {
  mac   = "52:54:00:00:00:01"
  ip    = "192.0.2.11"
  image = image.live
}
machine "remote" {
  mac   = "52:54:00:00:00:02"
  image = image.remote
}
machine "disk" {
  mac   = "52:54:00:00:00:03"
  image = image.disk
}
machine "off" {
  mac   = "52:54:00:00:00:04"
  image = image.live
  power = "off"
}
`

func TestPolicy(t *testing.T) {
	res, diags := site.Load("t.hcl", []byte(src), site.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	p := netboot.New(res.Site, netboot.Options{
		Discover: pxe.Intent{Kernel: "/agent/vmlinuz", Initrd: []string{"/agent/initrd"}},
		TokenKey: []byte("k"),
	})
	ctx := context.Background()
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

	h, err := p.Host(ctx, mac("52:54:00:00:00:01"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pxe.Host{Name: "live", MAC: mac("52:54:00:00:00:01"), IP: net.IP{192, 0, 2, 11}, Hostname: "live", Network: "lan"}, h); diff != "" {
		t.Errorf("host (-want +got):\n%s", diff)
	}
	if _, err := p.Host(ctx, mac("52:54:00:99:99:99")); !errors.Is(err, pxe.ErrUnknownHost) {
		t.Errorf("unknown host err = %v", err)
	}

	tests := map[string]struct {
		mac  string
		want pxe.Intent
	}{
		"local kernel is served by metal": {"52:54:00:00:00:01", pxe.Intent{Action: pxe.ActionInstall,
			Kernel: "/images/live/vmlinuz", Initrd: []string{"/images/live/initrd.img"}, Cmdline: "console=ttyS0"}},
		"remote kernel passes through": {"52:54:00:00:00:02", pxe.Intent{Action: pxe.ActionInstall, Kernel: "http://198.51.100.7/vmlinuz"}},
		"disk image boots locally":     {"52:54:00:00:00:03", pxe.Intent{Action: pxe.ActionLocal}},
		"powered off does not boot":    {"52:54:00:00:00:04", pxe.Intent{Action: pxe.ActionNone}},
		"unknown discovers":            {"52:54:00:99:99:99", pxe.Intent{Action: pxe.ActionDiscover, Kernel: "/agent/vmlinuz", Initrd: []string{"/agent/initrd"}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := p.Intent(ctx, mac(tc.mac))
			if err != nil {
				t.Fatal(err)
			}
			if _, known := p.Host(ctx, mac(tc.mac)); known == nil {
				if got.Token == "" || got.Token != p.Token(mac(tc.mac)) {
					t.Errorf("token %q", got.Token)
				}
				got.Token = ""
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("intent (-want +got):\n%s", diff)
			}
		})
	}
	if p.Token(mac("52:54:00:00:00:01")) == p.Token(mac("52:54:00:00:00:02")) {
		t.Error("tokens of two machines are equal")
	}
}
