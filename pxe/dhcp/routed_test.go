package dhcp

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/metal-dev/metal/internal/dhcpopt"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// rack is a routed rack for TestRoutedRacks: its subnet behind a relay
// (ISC dhcrelay) whose upstream leg is on the server's link.
type rack struct {
	name     string
	cidr     netip.Prefix
	gateway  netip.Addr // the relay's address in the rack: giaddr
	upstream netip.Addr // the relay's address on the server's link
	perf     netip.Addr // perfdhcp's address in the rack (0: none)
	relay    *pxetest.Netns
	// second: a second relay of a rack that has one already; the server
	// routes only to its gateway address through it.
	second bool
}

// addRack builds a rack: a relay namespace on the lab's link with a
// bridge (the rack's switch) holding the gateway address, forwarding
// between the two, a route to the rack from the server, and dhcrelay
// relaying the rack to the server.
func addRack(t *testing.T, lab *pxetest.Lab, dhcrelay string, r *rack) {
	t.Helper()
	r.relay = lab.AddHost("relay-"+r.name, nil)
	r.relay.MustIP("addr", "add", netip.PrefixFrom(r.upstream, pxetest.LabSubnet.Bits()).String(), "dev", "eth0")
	lab.AddBridge(r.relay, "rack", netip.PrefixFrom(r.gateway, r.cidr.Bits()).String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := r.relay.Command(ctx, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("ip_forward in %s: %v: %s", r.relay.Name, err, out)
	}
	dest := r.cidr.String()
	if r.second {
		dest = r.gateway.String() + "/32"
	}
	lab.NS().MustIP("route", "add", dest, "via", r.upstream.String())
	r.relay.Start(dhcrelay, "-4", "-d", "-a", "-id", "rack", "-iu", "eth0", pxetest.ServerIP.String())
	deadline := time.Now().Add(5 * time.Second)
	for !udpBound(t, r.relay, serverPort) {
		if time.Now().After(deadline) {
			t.Fatalf("dhcrelay in %s did not bind port 67 within 5s", r.relay.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rackHost plugs a host into a rack's switch.
func rackHost(lab *pxetest.Lab, r *rack, name string, mac net.HardwareAddr) *pxetest.Netns {
	return lab.AddHostTo(name, mac, r.relay, "rack")
}

// TestRoutedRacks: one server on one interface serves its own link and
// two routed racks, each behind its own ISC dhcrelay, with no address of
// its own in either rack. At the same time: udhcpc on the server's link
// gets that link's pool; udhcpc and dhclient in each rack get their
// rack's pool or reservation, with the rack's own gateway, DNS and
// domain; perfdhcp (a relay itself, declared as one) runs DORA, renewals
// and releases through a rack's dhcrelay. A rogue dhcrelay on the
// server's link, relaying a subnet that names no such relay, gets its
// client nothing, and a packet forged with a declared relay's giaddr from
// another source gets no answer.
func TestRoutedRacks(t *testing.T) {
	dhcrelay := pxetest.RequireTool(t, "dhcrelay", "isc-dhcp-relay")
	perfdhcp := pxetest.RequireTool(t, "perfdhcp", "kea-admin")
	pxetest.RequireTool(t, "busybox", "busybox-static")
	lab := pxetest.NewLab(t)
	racks := []*rack{
		{name: "r1", cidr: netip.MustParsePrefix("198.51.100.0/25"), gateway: netip.MustParseAddr("198.51.100.1"),
			upstream: netip.MustParseAddr("192.0.2.2"), perf: netip.MustParseAddr("198.51.100.9")},
		{name: "r2", cidr: netip.MustParsePrefix("203.0.113.0/24"), gateway: netip.MustParseAddr("203.0.113.1"),
			upstream: netip.MustParseAddr("192.0.2.3")},
	}
	// A second relay in rack 1 (another switch of the rack), declared.
	r1b := &rack{name: "r1b", cidr: racks[0].cidr, gateway: netip.MustParseAddr("198.51.100.2"),
		upstream: netip.MustParseAddr("192.0.2.5"), second: true}
	// The rogue relay's subnet is one metal serves, but without it.
	rogue := &rack{name: "x", cidr: netip.MustParsePrefix("198.51.100.128/25"), gateway: netip.MustParseAddr("198.51.100.129"),
		upstream: netip.MustParseAddr("192.0.2.4")}

	cfg := labConfig()
	cfg.RateLimit = RateLimit{Burst: 1000, Every: time.Millisecond, PoolBurst: 1000, PoolEvery: time.Millisecond}
	for i, r := range racks {
		relays := []netip.Addr{r.gateway, r.upstream}
		if r.perf.IsValid() {
			relays = append(relays, r.perf, r1b.gateway, r1b.upstream)
		}
		base := r.cidr.Addr().As4()
		cfg.Subnets = append(cfg.Subnets, Subnet{
			CIDR:      r.cidr,
			Gateway:   r.gateway,
			DNS:       []netip.Addr{netip.AddrFrom4([4]byte{base[0], base[1], base[2], 53})},
			Domain:    r.name + ".example",
			PoolStart: netip.AddrFrom4([4]byte{base[0], base[1], base[2], 20}),
			PoolEnd:   netip.AddrFrom4([4]byte{base[0], base[1], base[2], 100}),
			LeaseTime: time.Duration(10+i) * time.Minute,
			Relays:    relays,
		})
	}
	// Rack 2's options beyond the usual ones.
	cfg.Subnets[2].NTP = []netip.Addr{netip.MustParseAddr("203.0.113.123")}
	cfg.Subnets[2].MTU = 9000
	cfg.Subnets[2].Routes = []dhcpopt.Route{{Dest: netip.MustParsePrefix("10.30.0.0/16"), Via: netip.MustParseAddr("203.0.113.2")}}
	cfg.Subnets[2].Options = []Option{{Code: 66, Value: []byte("tftp.r2.example")}}
	cfg.Subnets = append(cfg.Subnets, Subnet{CIDR: rogue.cidr, Relays: []netip.Addr{netip.MustParseAddr("198.51.100.130")}})
	reserved, ported := pxetest.MAC(80), pxetest.MAC(87)
	// dhcrelay -a sends the downstream interface's name as circuit-id.
	port := &pxe.SwitchPort{Relay: racks[0].gateway, CircuitID: "rack"}
	policy := newTestPolicy(pxe.Host{Name: "db-r2", MAC: reserved, IP: net.ParseIP("203.0.113.12")},
		pxe.Host{Name: "r1-port", MAC: ported, IP: net.ParseIP("198.51.100.17"), SwitchPort: port})
	startServer(t, lab, cfg, policy, nil)
	for _, r := range racks {
		addRack(t, lab, dhcrelay, r)
	}
	addRack(t, lab, dhcrelay, r1b)
	addRack(t, lab, dhcrelay, rogue)

	// The hosts, made before any client runs so the clients run at once.
	direct := lab.AddHost("direct", pxetest.MAC(81))
	r1udhcpc := rackHost(lab, racks[0], "r1u", pxetest.MAC(82))
	r1dhclient := rackHost(lab, racks[0], "r1d", pxetest.MAC(83))
	r1perf := rackHost(lab, racks[0], "r1p", nil)
	r1perf.MustIP("addr", "add", netip.PrefixFrom(racks[0].perf, racks[0].cidr.Bits()).String(), "dev", "eth0")
	r1perf.MustIP("route", "add", "default", "via", racks[0].gateway.String())
	r2udhcpc := rackHost(lab, racks[1], "r2u", reserved)
	r2dhclient := rackHost(lab, racks[1], "r2d", pxetest.MAC(84))
	victim := rackHost(lab, rogue, "xu", pxetest.MAC(85))
	portAtR1 := rackHost(lab, racks[0], "r1port", ported)
	portAtR1b := rackHost(lab, r1b, "r1bport", ported)

	inPool := func(ip string, lo, hi string) bool {
		a, err := netip.ParseAddr(ip)
		return err == nil && !a.Less(netip.MustParseAddr(lo)) && !netip.MustParseAddr(hi).Less(a)
	}
	var wg sync.WaitGroup
	run := func(name string, f func(t *testing.T)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, f)
		}()
	}
	run("direct udhcpc: the server's link", func(t *testing.T) {
		env := udhcpc(t, direct)
		if !inPool(env["ip"], "192.0.2.100", "192.0.2.199") || env["router"] != "192.0.2.254" || env["domain"] != "lab.example" {
			t.Errorf("direct client: %v", pick(env, "ip", "router", "domain", "serverid"))
		}
	})
	run("rack 1 udhcpc: its pool and gateway", func(t *testing.T) {
		env := udhcpc(t, r1udhcpc)
		want := map[string]string{"router": "198.51.100.1", "dns": "198.51.100.53", "domain": "r1.example", "subnet": "255.255.255.128", "lease": "600", "serverid": "192.0.2.1"}
		if got := pick(env, "router", "dns", "domain", "subnet", "lease", "serverid"); !equalMaps(got, want) || !inPool(env["ip"], "198.51.100.20", "198.51.100.100") {
			t.Errorf("rack 1 udhcpc: ip %s %v, want a pool address and %v", env["ip"], got, want)
		}
	})
	run("rack 1 dhclient", func(t *testing.T) {
		env := dhclient(t, r1dhclient)
		if !inPool(env["new_ip_address"], "198.51.100.20", "198.51.100.100") || env["new_routers"] != "198.51.100.1" {
			t.Errorf("rack 1 dhclient: %v", pick(env, "new_ip_address", "new_routers", "new_domain_name"))
		}
	})
	run("rack 2 udhcpc: its reservation and options", func(t *testing.T) {
		env := udhcpc(t, r2udhcpc, "-O", "ntpsrv", "-O", "mtu", "-O", "staticroutes", "-O", "tftp")
		want := map[string]string{"ip": "203.0.113.12", "router": "203.0.113.1", "hostname": "db-r2", "lease": "660",
			"ntpsrv": "203.0.113.123", "mtu": "9000", "tftp": "tftp.r2.example",
			// The default route by the gateway is added: clients given
			// option 121 ignore option 3.
			"staticroutes": "10.30.0.0/16 203.0.113.2 0.0.0.0/0 203.0.113.1"}
		if diff := cmp.Diff(want, pick(env, "ip", "router", "hostname", "lease", "ntpsrv", "mtu", "staticroutes", "tftp")); diff != "" {
			t.Errorf("rack 2 reserved (-want +got):\n%s", diff)
		}
	})
	run("rack 2 dhclient", func(t *testing.T) {
		env := dhclient(t, r2dhclient)
		if !inPool(env["new_ip_address"], "203.0.113.20", "203.0.113.100") || env["new_routers"] != "203.0.113.1" || env["new_domain_name"] != "r2.example" {
			t.Errorf("rack 2 dhclient: %v", pick(env, "new_ip_address", "new_routers", "new_domain_name"))
		}
	})
	run("rack 1 perfdhcp: DORA, renewals, releases", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// perfdhcp sends as a relay (giaddr its own address), here to
		// the rack's dhcrelay, which forwards it to the server.
		out, err := r1perf.Command(ctx, perfdhcp, "-4", "-l", "eth0", "-R", "20", "-r", "20", "-p", "6",
			"-f", "10", "-F", "5", racks[0].gateway.String()).CombinedOutput()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 { // 3: some packets lost
				t.Fatalf("perfdhcp: %v\n%s", err, out)
			}
		}
		stats := perfStats(string(out))
		t.Logf("perfdhcp: %v", stats)
		for _, ex := range []string{"DISCOVER-OFFER", "REQUEST-ACK", "REQUEST-ACK (renewal)"} {
			s, r := stats[ex][0], stats[ex][1]
			if s == 0 || r < s*9/10 {
				t.Errorf("%s: %d sent, %d received; want most answered\n%s", ex, s, r, out)
			}
		}
		if stats["RELEASE"][0] == 0 {
			t.Errorf("perfdhcp sent no RELEASE\n%s", out)
		}
	})
	run("switch port: its reservation through its relay only", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// The same MAC behind rack 1's other relay (declared, with the
		// same circuit-id) first: nothing.
		out, err := portAtR1b.Command(ctx, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "3", "-T", "1", "-s", "/bin/true").CombinedOutput()
		if err == nil {
			t.Errorf("a switch-port machine got a lease through another relay:\n%s", out)
		}
		env := udhcpc(t, portAtR1)
		if env["ip"] != "198.51.100.17" || env["hostname"] != "r1-port" {
			t.Errorf("at its port: %v, want 198.51.100.17 r1-port", pick(env, "ip", "hostname"))
		}
	})
	run("rogue relay: its client gets nothing", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := victim.Command(ctx, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "4", "-T", "1", "-s", "/bin/true").CombinedOutput()
		if err == nil {
			t.Errorf("a client behind an undeclared relay got a lease:\n%s", out)
		}
	})
	run("forged giaddr from another source: no answer", func(t *testing.T) {
		// From the rogue relay's namespace (192.0.2.4), claiming rack 1's
		// relay as giaddr.
		conn := udpIn(t, rogue.relay, "", 0)
		req := discover(pxetest.MAC(86), dhcpv4.WithRelay(net.IP(racks[0].gateway.AsSlice())))
		if resp := exchange(t, conn, req.ToBytes(), req.TransactionID, "192.0.2.1:67", 2*time.Second); resp != nil {
			t.Errorf("answered a forged relayed packet: %v", parseReply(t, resp))
		}
	})
	wg.Wait()
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

var perfSection = regexp.MustCompile(`(?m)^\*\*\*Statistics for: (.+?)\*\*\*$`)

// perfStats reads perfdhcp's report: per exchange, packets sent and
// received.
func perfStats(out string) map[string][2]int {
	stats := map[string][2]int{}
	locs := perfSection.FindAllStringSubmatchIndex(out, -1)
	for i, l := range locs {
		name := strings.TrimSpace(out[l[2]:l[3]])
		end := len(out)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		var s [2]int
		for _, line := range strings.Split(out[l[1]:end], "\n") {
			line = strings.TrimSpace(line)
			for j, key := range []string{"sent packets:", "received packets:"} {
				if v, ok := strings.CutPrefix(line, key); ok {
					s[j], _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
		}
		stats[name] = s
	}
	return stats
}
