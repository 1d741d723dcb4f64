package doctor

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/site"
)

// TestCheckHardware asks metal's virtual BMC, as metal doctor does, about
// BIOS settings (its registry allows one value and refuses another) and
// a firmware component it does not list.
func TestCheckHardware(t *testing.T) {
	// One BMC answers for both machines: what differs is what the site
	// asks of it.
	srv, err := virtual.NewServer(virtual.Options{Username: "admin", Password: "doctor-test"},
		virtual.MachineSpec{Name: "vm", Machine: virtual.NewSim(virtual.SimOptions{Name: "vm"})})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(srvCtx, ln, nil) }()
	defer func() { stop(); <-done }()
	machine := func(name, n, hw string) string {
		return fmt.Sprintf(`machine %q {
  mac = "52:54:00:00:00:0%s"
%s
  bmc {
    address  = "http://%s"
    username = "admin"
    password = "doctor-test"
  }
}
`, name, n, hw, ln.Addr())
	}
	src := `site "t" {}
network "lan" {
  subnet = "192.0.2.0/24"
  mode   = "off"
}
` + machine("good", "1", `  bios = { ProcVirtualization = "Enabled" }`) + machine("bad", "2", `  bios = { ProcVirtualization = "Maybe" }
  firmware "NIC9" {
    version  = "2.0"
    image    = "nic.bin"
    checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
  }`)
	res, diags := site.Load("site.hcl", []byte(src), site.Options{})
	if diags.HasErrors() {
		t.Fatal(hcl.Diagnostics(diags).Error())
	}
	opts := Options{Site: res.Site}
	opts.defaults()
	got := map[string]Check{}
	for _, c := range checkHardware(ctx, opts) {
		got[c.Subject] = c
	}
	if c := got["hardware of good"]; c.Status != OK {
		t.Errorf("good: %+v", c)
	}
	c := got["hardware of bad"]
	if c.Status != Fail || !contains(c.Detail, "must be one of Enabled, Disabled", "no component NIC9") {
		t.Errorf("bad: %+v", c)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
