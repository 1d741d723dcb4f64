package http

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/metal-dev/metal/pxe"
)

// TestScriptOverIPv6: one server listening on IPv4 and IPv6 loopback
// (Serve's MoreAddrs) with an IPv4 BaseURL names kernels at BaseURL in a
// script fetched over IPv4, and at the IPv6 address it was fetched from
// in one fetched over IPv6, where BaseURL cannot be reached.
func TestScriptOverIPv6(t *testing.T) {
	ln4, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	mac := "52:54:00:00:00:61"
	hw, _ := net.ParseMAC(mac)
	p := &policy{
		hosts:   map[string]pxe.Host{mac: {Name: "v6", MAC: hw}},
		intents: map[string]pxe.Intent{mac: {Action: pxe.ActionInstall, Kernel: "/files/k", Cmdline: "console=ttyS0", Token: "tok"}},
	}
	base, _ := url.Parse("http://192.0.2.1:8080")
	srv, err := New(Config{Policy: p, BaseURL: base, Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln4, ln6) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	}()
	tests := map[string]struct{ server, from, want string }{
		"IPv4": {server: ln4.Addr().String(), from: "127.0.0.1", want: "kernel http://192.0.2.1:8080/files/k "},
		"IPv6": {server: ln6.Addr().String(), from: "::1", want: "kernel http://" + ln6.Addr().String() + "/files/k "},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, _ := get(t, clientFrom(tc.from), "http://"+tc.server+"/ipxe/"+mac+"?token=tok", nil)
			if got.Status != 200 || !strings.Contains(got.Body, tc.want) {
				t.Errorf("script over %s: HTTP %d\n%s\nwant a line starting %q", name, got.Status, got.Body, tc.want)
			}
		})
	}
}
