package ipxe

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/metal-dev/metal/pxe"
)

var mac = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}

func TestRender(t *testing.T) {
	base, _ := url.Parse("http://192.0.2.1:8080")
	tests := map[string]struct {
		in   pxe.Intent
		p    Params
		want string
	}{
		"install": {
			in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/images/debian-12/linux",
				Initrd:  []string{"/images/debian-12/initrd.gz", "http://mirror.example/firmware.cpio.gz"},
				Cmdline: "console=ttyS0  quiet\n"},
			p: Params{MAC: mac, Name: "web-01", BaseURL: base},
			want: `#!ipxe
echo metal: web-01 52:54:00:00:00:01 install
kernel http://192.0.2.1:8080/images/debian-12/linux initrd=initrd.gz initrd=firmware.cpio.gz console=ttyS0 quiet
initrd --name initrd.gz http://192.0.2.1:8080/images/debian-12/initrd.gz
initrd --name firmware.cpio.gz http://mirror.example/firmware.cpio.gz
boot
`,
		},
		"discover, paths left relative": {
			in: pxe.Intent{Action: pxe.ActionDiscover, Kernel: "/files/agent/vmlinuz", Initrd: []string{"/files/agent/initrd"}},
			p:  Params{MAC: mac},
			want: `#!ipxe
echo metal: 52:54:00:00:00:01 discover
kernel /files/agent/vmlinuz initrd=initrd
initrd --name initrd /files/agent/initrd
boot
`,
		},
		"unsafe names and same-named initrds": {
			in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "http://h/k",
				Initrd: []string{"http://h/a/initrd", "http://h/b/initrd", "http://h/-x", "http://h/my%20initrd"}},
			p: Params{Name: "web 01\n#!ipxe ${x}"},
			want: `#!ipxe
echo metal: web_01___ipxe___x_ install
kernel http://h/k initrd=initrd initrd=initrd1 initrd=initrd2 initrd=initrd3
initrd --name initrd http://h/a/initrd
initrd --name initrd1 http://h/b/initrd
initrd --name initrd2 http://h/-x
initrd --name initrd3 http://h/my%20initrd
boot
`,
		},
		"URLs with spaces and dollars are encoded": {
			in: pxe.Intent{Action: pxe.ActionInstall, Kernel: "http://h/my kernel/${x}?a=b c&d=$e#frag"},
			want: `#!ipxe
echo metal: this machine install
kernel http://h/my%20kernel/%24%7Bx%7D?a=b%20c&d=%24e
boot
`,
		},
		"local": {
			in: pxe.Intent{Action: pxe.ActionLocal},
			p:  Params{MAC: mac, Name: "db-1"},
			want: `#!ipxe
echo metal: db-1 52:54:00:00:00:01 boots from local disk
iseq ${platform} pcbios || exit
sanboot --no-describe --drive 0x80 || exit
`,
		},
		"none": {
			in: pxe.Intent{Action: pxe.ActionNone},
			p:  Params{MAC: mac},
			want: `#!ipxe
echo metal: nothing to boot for 52:54:00:00:00:01
exit
`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Render(tc.in, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("script (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderRefuses(t *testing.T) {
	ok := pxe.Intent{Action: pxe.ActionInstall, Kernel: "http://h/k"}
	with := func(f func(*pxe.Intent)) pxe.Intent { in := ok; f(&in); return in }
	tests := map[string]pxe.Intent{
		"no kernel":             with(func(in *pxe.Intent) { in.Kernel = "" }),
		"setting expansion":     with(func(in *pxe.Intent) { in.Cmdline = "root=${root}" }),
		"command separator":     with(func(in *pxe.Intent) { in.Cmdline = "quiet || shell" }),
		"semicolon":             with(func(in *pxe.Intent) { in.Cmdline = "quiet ; shell" }),
		"and":                   with(func(in *pxe.Intent) { in.Cmdline = "quiet && shell" }),
		"comment":               with(func(in *pxe.Intent) { in.Cmdline = "quiet #!ipxe" }),
		"line continuation":     with(func(in *pxe.Intent) { in.Cmdline = `quiet\` }),
		"control byte":          with(func(in *pxe.Intent) { in.Cmdline = "quiet\x00shell" }),
		"escape sequence":       with(func(in *pxe.Intent) { in.Cmdline = "\x1b[2J" }),
		"non-ASCII":             with(func(in *pxe.Intent) { in.Cmdline = "grüße" }),
		"too long":              with(func(in *pxe.Intent) { in.Cmdline = strings.Repeat("a ", MaxCmdline) }),
		"kernel over tftp":      with(func(in *pxe.Intent) { in.Kernel = "tftp://h/k" }),
		"kernel relative":       with(func(in *pxe.Intent) { in.Kernel = "linux" }),
		"kernel with newline":   with(func(in *pxe.Intent) { in.Kernel = "http://h/k\nshell" }),
		"initrd with no host":   with(func(in *pxe.Intent) { in.Initrd = []string{"http:///x"} }),
		"initrd javascript":     with(func(in *pxe.Intent) { in.Initrd = []string{"javascript:alert(1)"} }),
		"unknown action":        with(func(in *pxe.Intent) { in.Action = "shell\nshell" }),
		"protocol-relative URL": with(func(in *pxe.Intent) { in.Kernel = "//evil.example/k" }),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Render(in, Params{MAC: mac})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Render = %q, %v; want ErrInvalid", got, err)
			}
		})
	}
}

func TestChain(t *testing.T) {
	want := "#!ipxe\nchain /ipxe/${netX/mac}\n"
	if diff := cmp.Diff(want, string(Chain("/ipxe/"))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
