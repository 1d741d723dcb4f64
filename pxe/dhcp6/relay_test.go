package dhcp6

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestRelayedClient: ISC dhcrelay in DHCPv6 mode (adding an interface-id)
// relays a rack's link to metal's DHCPv6 server on an IPv6-only link of
// its own, and ISC dhclient -6 in the rack gets its reservation on the
// rack's prefix through it, with the network's IPv6 name servers (option
// 23). The link-address dhcrelay puts in its
// Relay-Forward (its own address in the rack) picks the rack's link.
func TestRelayedClient(t *testing.T) {
	dhcrelay := pxetest.RequireTool(t, "dhcrelay", "isc-dhcp-relay")
	dhclient := pxetest.RequireTool(t, "dhclient", "isc-dhcp-client")
	t.Parallel()
	lab := pxetest.NewLab(t)
	lab.IPv6Only()
	upstream := netip.MustParseAddr("2001:db8:0:1::2")
	gateway := netip.MustParseAddr("2001:db8:0:2::1") // the relay's address in the rack
	machineIP := netip.MustParseAddr("2001:db8:0:2::50")
	dns := []netip.Addr{netip.MustParseAddr("2001:db8::53"), netip.MustParseAddr("2001:db8:0:2::53")}
	mac := pxetest.RandomMAC()

	relay := lab.AddHost("relay6", nil)
	relay.MustIP("addr", "add", netip.PrefixFrom(upstream, 64).String(), "dev", "eth0", "nodad")
	lab.AddBridge(relay, "rack", "")
	relay.MustIP("addr", "add", netip.PrefixFrom(gateway, pxetest.RelaySubnet6.Bits()).String(), "dev", "rack", "nodad")
	client := lab.AddHostTo("m6", mac, relay, "rack")
	relay.WaitIPv6("eth0")
	relay.WaitIPv6("rack")
	client.WaitIPv6("eth0")

	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := New(Config{Interface: pxetest.BridgeName, ServerIP: pxetest.ServerIP6,
		HTTPBaseURL: "http://[" + pxetest.ServerIP6.String() + "]:8080", Logger: log, DNS: dns,
		Relayed: []RelayedLink{{Prefix: pxetest.RelaySubnet6, Agents: []netip.Addr{upstream}}}},
		onePolicy{host: pxe.Host{Name: "m6", MAC: mac, IP6: machineIP.AsSlice()}, intent: pxe.Intent{Action: pxe.ActionNone}})
	must(t, err)
	stop := lab.NS().Serve(t, context.Background(), map[string]func(context.Context) error{"dhcp6": srv.Serve})
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("metal's log:\n%s", logs.String())
		}
	})
	<-srv.Listening()
	relay.Start(dhcrelay, "-6", "-d", "-I", "-l", "rack", "-u", pxetest.ServerIP6.String()+"%eth0")

	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	must(t, os.WriteFile(hook, []byte("#!/bin/sh\nenv > \""+dir+"/$reason.tmp\" && mv \""+dir+"/$reason.tmp\" \""+dir+"/$reason\"\n"), 0o755))
	p := client.Start(dhclient, "-6", "-d", "-1", "-D", "LL", "-sf", hook,
		"-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), "eth0")
	defer p.Stop()
	bound := filepath.Join(dir, "BOUND6")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(bound); err == nil {
			break
		}
		select {
		case <-p.Done():
			t.Fatalf("dhclient -6 exited without a lease: %v\n%s", p.Err(), p.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dhclient -6 got no lease through dhcrelay within 60s:\n%s", p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	env := readEnv(t, bound)
	if got := env["new_ip6_address"]; got != machineIP.String() {
		t.Errorf("dhclient's address: %q, want the reservation %s (environment %v)", got, machineIP, env)
	}
	if got, want := env["new_dhcp6_name_servers"], dns[0].String()+" "+dns[1].String(); got != want {
		t.Errorf("dhclient's name servers (option 23): %q, want %q", got, want)
	}
	if !strings.Contains(logs.String(), `"link":"`+gateway.String()+`"`) {
		t.Errorf("metal's log names no relayed link %s", gateway)
	}
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
