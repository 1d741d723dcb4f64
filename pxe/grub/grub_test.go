package grub

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/metal-dev/metal/pxe"
)

func TestRender(t *testing.T) {
	secret := strings.Repeat("ab", 16)
	tests := map[string]struct {
		in      pxe.Intent
		want    string
		wantErr bool
	}{
		"install": {
			in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/files/vmlinuz", Initrd: []string{"/files/agent.cpio", "/files/modules.cpio"},
				Cmdline: "console=ttyS0  metal.server=http://192.0.2.1:8080", AgentSecret: secret},
			want: "set timeout=0\necho 'metal: install'\n" +
				"linux /files/vmlinuz console=ttyS0 metal.server=http://192.0.2.1:8080 metal.token=" + secret + "\n" +
				"initrd /files/agent.cpio /files/modules.cpio\nboot\n",
		},
		"local": {in: pxe.Intent{Action: pxe.ActionLocal}, want: "set timeout=0\necho 'metal: local'\n" +
			"if search --no-floppy --file --set=root /EFI/BOOT/BOOTX64.EFI; then\n  chainloader /EFI/BOOT/BOOTX64.EFI\n  boot\nfi\n" +
			"if search --no-floppy --file --set=root /EFI/debian/shimx64.efi; then\n  chainloader /EFI/debian/shimx64.efi\n  boot\nfi\n" +
			"exit\n"},
		"none":            {in: pxe.Intent{Action: pxe.ActionNone}, want: "set timeout=0\nexit\n"},
		"url kernel":      {in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "http://mirror/linux"}, wantErr: true},
		"no kernel":       {in: pxe.Intent{Action: pxe.ActionDiscover}, wantErr: true},
		"variable":        {in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Cmdline: "a=${root}"}, wantErr: true},
		"separator":       {in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Cmdline: "a;reboot"}, wantErr: true},
		"quote":           {in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Cmdline: "a='b'"}, wantErr: true},
		"space in initrd": {in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Initrd: []string{"/a b"}}, wantErr: true},
		"newline in path": {in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k\nreboot"}, wantErr: true},
		"bad secret":      {in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", AgentSecret: "x;y"}, wantErr: true},
		"unknown action":  {in: pxe.Intent{Action: "dance"}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Render(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Render = %q, %v; want ErrInvalid", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

type policy map[string]pxe.Host

func (p policy) Host(_ context.Context, mac net.HardwareAddr) (pxe.Host, error) {
	h, ok := p[mac.String()]
	if !ok {
		return pxe.Host{}, pxe.ErrUnknownHost
	}
	return h, nil
}

func (p policy) Intent(_ context.Context, mac net.HardwareAddr) (pxe.Intent, error) {
	return pxe.Intent{Action: pxe.ActionInstall, Kernel: "/files/vmlinuz", Spent: p[mac.String()].Name == "spent"}, nil
}

type leases map[string]string // IP to MAC

func (l leases) LeasedIP(net.HardwareAddr) (net.IP, bool) { return nil, false }
func (l leases) MACOf(ip net.IP) (net.HardwareAddr, bool) {
	m, ok := l[ip.String()]
	if !ok {
		return nil, false
	}
	mac, _ := net.ParseMAC(m)
	return mac, true
}

func TestConfigs(t *testing.T) {
	c := Configs{
		Policy: policy{
			"52:54:00:00:00:01": {Name: "secure", Boot: pxe.BootSecure},
			"52:54:00:00:00:02": {Name: "ipxe", Boot: pxe.BootIPXE},
			"52:54:00:00:00:03": {Name: "spent", Boot: pxe.BootSecure},
		},
		Leases: leases{"192.0.2.11": "52:54:00:00:00:01", "192.0.2.12": "52:54:00:00:00:02",
			"192.0.2.13": "52:54:00:00:00:03", "192.0.2.14": "52:54:00:00:00:04"},
	}
	tests := map[string]struct {
		client, name string
		want         error // nil: a config
	}{
		"by prefix":          {client: "192.0.2.11", name: "grub/grub.cfg"},
		"by its MAC":         {client: "192.0.2.11", name: "grub/grub.cfg-01-52-54-00-00-00-01"},
		"another MAC's":      {client: "192.0.2.11", name: "grub/grub.cfg-01-52-54-00-00-00-02", want: fs.ErrNotExist},
		"by IP name":         {client: "192.0.2.11", name: "grub/grub.cfg-C000020B", want: fs.ErrNotExist},
		"not a config":       {client: "192.0.2.11", name: "files/vmlinuz", want: fs.ErrNotExist},
		"no lease":           {client: "192.0.2.99", name: "grub/grub.cfg", want: fs.ErrPermission},
		"boots through iPXE": {client: "192.0.2.12", name: "grub/grub.cfg", want: fs.ErrPermission},
		"secret spent":       {client: "192.0.2.13", name: "grub/grub.cfg", want: fs.ErrPermission},
		"unknown machine":    {client: "192.0.2.14", name: "grub/grub.cfg", want: fs.ErrNotExist},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := c.Generate(context.Background(), netip.MustParseAddr(tc.client), tc.name)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Generate = %q, %v; want %v", got, err, tc.want)
				}
				return
			}
			if err != nil || !bytes.Contains(got, []byte("linux /files/vmlinuz")) {
				t.Fatalf("Generate = %q, %v", got, err)
			}
		})
	}
}
