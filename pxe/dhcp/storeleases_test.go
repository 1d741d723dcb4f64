package dhcp_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/etcdtest"
	"github.com/metal-dev/metal/pxe/dhcp"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/storeleases"
)

func openStore(t *testing.T, url string) inventory.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := backend.Open(ctx, url, backend.Options{DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// storedLeases returns the store's unexpired leases as "mac ip" lines.
func storedLeases(t *testing.T, s inventory.Store) []string {
	t.Helper()
	ls, _, err := s.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		if !l.Expired(time.Now()) {
			out = append(out, l.MAC+" "+l.IP.String())
		}
	}
	sort.Strings(out)
	return out
}

// leaseOnce runs udhcpc in ns once and returns the address it was bound
// to, or an error (no lease within tries attempts). Safe to call from
// several goroutines: it reports, it does not fail the test.
func leaseOnce(ns *pxetest.Netns, hook, dir string, tries int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := ns.Command(ctx, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
		"-t", fmt.Sprint(tries), "-T", "1", "-A", "1", "-s", hook).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("udhcpc in %s: %v\n%s", ns.Name, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if _, ip, ok := strings.Cut(line, "lease of "); ok {
			return strings.Fields(ip)[0], nil
		}
	}
	return "", fmt.Errorf("udhcpc in %s printed no lease:\n%s", ns.Name, out)
}

// TestInventoryLeasesBolt: a server whose leases are in the embedded
// inventory store hands real clients distinct pool addresses, records them
// in the store, and after a restart on the same store gives each MAC its
// address back even when the other asks first.
func TestInventoryLeasesBolt(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	url := "file://" + filepath.Join(t.TempDir(), "state.db")
	var store inventory.Store
	open := func() dhcp.LeaseStore {
		store = openStore(t, url)
		return storeleases.NewInventoryLeases(store)
	}
	dhcp.CheckRestartKeepsLeases(t, pxetest.NewLab(t), 30, open, func(ipA, ipB string) {
		want := []string{pxetest.MAC(30).String() + " " + ipA, pxetest.MAC(31).String() + " " + ipB}
		sort.Strings(want)
		if d := cmp.Diff(want, storedLeases(t, store)); d != "" {
			t.Errorf("leases in the store (-want +got):\n%s", d)
		}
		store.Close() // the restarted server opens it again
	})
}

// TestInventoryLeasesTwoServersOneEtcd: two DHCP servers, each in its own
// lab (its own L2 network and clients) but allocating the same pool from
// one real etcd, serve three clients each at once: the six get the pool's
// six addresses, no address twice, and a seventh client gets none.
func TestInventoryLeasesTwoServersOneEtcd(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	c := etcdtest.New(t, 1)
	url := c.StateURL("/metal-dhcp")
	cfg := dhcp.LabConfig()
	cfg.Subnets[0].PoolStart = netip.MustParseAddr("192.0.2.100")
	cfg.Subnets[0].PoolEnd = netip.MustParseAddr("192.0.2.105")

	labs := []*pxetest.Lab{pxetest.NewLab(t), pxetest.NewLab(t)}
	stores := []inventory.Store{openStore(t, url), openStore(t, url)}
	for i, lab := range labs {
		dhcp.StartServer(t, lab, cfg, dhcp.NewTestPolicy(), storeleases.NewInventoryLeases(stores[i]))
	}
	type client struct {
		ns        *pxetest.Netns
		hook, dir string
		mac       string
	}
	var clients []client
	for i := range 6 {
		mac := pxetest.MAC(40 + i)
		dir := t.TempDir()
		clients = append(clients, client{ns: labs[i%2].AddHost(fmt.Sprintf("c%d", i), mac), hook: dhcp.EnvScript(t, dir), dir: dir, mac: mac.String()})
	}
	ips := make([]string, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ips[i], errs[i] = leaseOnce(cl.ns, cl.hook, cl.dir, 10)
		}()
	}
	wg.Wait()
	var want []string
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, clients[i].mac+" "+ips[i])
	}
	sort.Strings(want)
	got := append([]string(nil), ips...)
	sort.Strings(got)
	if d := cmp.Diff([]string{"192.0.2.100", "192.0.2.101", "192.0.2.102", "192.0.2.103", "192.0.2.104", "192.0.2.105"}, got); d != "" {
		t.Errorf("addresses handed out (-want +got):\n%s", d)
	}
	// Both servers' view of the store is the same, and it is what the
	// clients were told.
	for i, s := range stores {
		if d := cmp.Diff(want, storedLeases(t, s)); d != "" {
			t.Errorf("leases in the store seen by server %d (-want +got):\n%s", i, d)
		}
	}

	late := labs[1].AddHost("late", pxetest.MAC(50))
	dir := t.TempDir()
	if ip, err := leaseOnce(late, dhcp.EnvScript(t, dir), dir, 3); err == nil {
		t.Errorf("a seventh client got %s from a pool of six held by others", ip)
	}
}

// TestInventoryLeasesTwoNetworks: the servers of two networks (two labs,
// 192.0.2.0/24 and 198.51.100.0/24) keep their leases in one inventory
// store, as metal serve does with several networks on etcd. Each real
// client gets a lease of its own network. Restarted on the store, each
// server loads, counts and reports its own network's lease only, and a
// RELEASE or DECLINE that names the other network's addresses leaves the
// store as it was.
func TestInventoryLeasesTwoNetworks(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	urls := map[string]func(t *testing.T) string{
		"bolt": func(t *testing.T) string { return "file://" + filepath.Join(t.TempDir(), "state.db") },
		"etcd": func(t *testing.T) string { return etcdtest.New(t, 1).StateURL("/metal-dhcp") },
	}
	for name, url := range urls {
		t.Run(name, func(t *testing.T) { checkTwoNetworks(t, openStore(t, url(t))) })
	}
}

func checkTwoNetworks(t *testing.T, store inventory.Store) {
	labA, labB := pxetest.NewLab(t), pxetest.NewLab(t)
	cfgA := dhcp.LabConfig()
	cfgA.Subnets[0].PoolStart = netip.MustParseAddr("192.0.2.100")
	cfgA.Subnets[0].PoolEnd = netip.MustParseAddr("192.0.2.105")
	// Lab B's bridge serves 198.51.100.0/24 (its 192.0.2.1 stays unused).
	labB.NS().MustIP("addr", "add", "198.51.100.1/24", "dev", pxetest.BridgeName)
	cfgB := dhcp.Config{
		Interface: pxetest.BridgeName,
		ServerIP:  netip.MustParseAddr("198.51.100.1"),
		Subnets: []dhcp.Subnet{{
			CIDR:      pxetest.RelaySubnetA,
			PoolStart: netip.MustParseAddr("198.51.100.100"),
			PoolEnd:   netip.MustParseAddr("198.51.100.105"),
			LeaseTime: 10 * time.Minute,
		}},
		HTTPBaseURL: "http://198.51.100.1:8080",
	}
	// Server A tells which packets it has handled, so the test knows when
	// its answer (or its silence) is final.
	handled := make(chan string, 64)
	cfgA.Observe = func(msgType, result string) {
		select {
		case handled <- msgType + " " + result:
		default: // never stall the server
		}
	}

	macA, macB := pxetest.MAC(60), pxetest.MAC(61)
	hostA, hostB := labA.AddHost("a", macA), labB.AddHost("b", macB)
	_, stopA := dhcp.StartServer(t, labA, cfgA, dhcp.NewTestPolicy(), storeleases.NewInventoryLeases(store))
	_, stopB := dhcp.StartServer(t, labB, cfgB, dhcp.NewTestPolicy(), storeleases.NewInventoryLeases(store))
	ipA, ipB := dhcp.Udhcpc(t, hostA)["ip"], dhcp.Udhcpc(t, hostB)["ip"]
	if !cfgA.Subnets[0].CIDR.Contains(netip.MustParseAddr(ipA)) || !cfgB.Subnets[0].CIDR.Contains(netip.MustParseAddr(ipB)) {
		t.Fatalf("leases %s (lab A) and %s (lab B): each should be of its own lab's network", ipA, ipB)
	}
	want := []string{macA.String() + " " + ipA, macB.String() + " " + ipB}
	sort.Strings(want)
	if d := cmp.Diff(want, storedLeases(t, store)); d != "" {
		t.Fatalf("leases in the store (-want +got):\n%s", d)
	}

	// Restarted, each server loads the whole store.
	stopA()
	stopB()
	for len(handled) > 0 {
		<-handled
	}
	srvA, _ := dhcp.StartServer(t, labA, cfgA, dhcp.NewTestPolicy(), storeleases.NewInventoryLeases(store))
	srvB, _ := dhcp.StartServer(t, labB, cfgB, dhcp.NewTestPolicy(), storeleases.NewInventoryLeases(store))
	type view struct {
		InUse            int
		Own, Other       string // LeasedIP of each lab's MAC
		OwnMAC, OtherMAC string // MACOf each lab's address
	}
	look := func(h *dhcp.Handler, own, other net.HardwareAddr, ownIP, otherIP string) view {
		v := view{InUse: h.LeasesInUse()}
		if ip, ok := h.LeasedIP(own); ok {
			v.Own = ip.String()
		}
		if ip, ok := h.LeasedIP(other); ok {
			v.Other = ip.String()
		}
		if mac, ok := h.MACOf(net.ParseIP(ownIP)); ok {
			v.OwnMAC = mac.String()
		}
		if mac, ok := h.MACOf(net.ParseIP(otherIP)); ok {
			v.OtherMAC = mac.String()
		}
		return v
	}
	got := map[string]view{
		"A": look(srvA.Handler(), macA, macB, ipA, ipB),
		"B": look(srvB.Handler(), macB, macA, ipB, ipA),
	}
	wantViews := map[string]view{
		"A": {InUse: 1, Own: ipA, OwnMAC: macA.String()},
		"B": {InUse: 1, Own: ipB, OwnMAC: macB.String()},
	}
	if d := cmp.Diff(wantViews, got); d != "" {
		t.Errorf("what each server knows after loading the shared store (-want +got):\n%s", d)
	}

	// dhcp.From lab A, packets about lab B's addresses: B's client's MAC
	// releasing and declining its lease (a NIC on both networks, or a
	// spoofer), and A's client declining a free address of B's pool.
	conn := dhcp.UDPIn(t, hostA, "", dhcp.ClientPort)
	for _, m := range []*dhcpv4.DHCPv4{
		dhcp.Msg(dhcpv4.MessageTypeRelease, macB, dhcpv4.WithClientIP(net.ParseIP(ipB)), dhcpv4.WithServerIP(net.ParseIP("192.0.2.1"))),
		dhcp.Msg(dhcpv4.MessageTypeDecline, macB, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ipB)))),
		dhcp.Msg(dhcpv4.MessageTypeDecline, macA, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.51.100.105")))),
	} {
		dhcp.Exchange(t, conn, m.ToBytes(), m.TransactionID, "192.0.2.1:67", 0)
		select {
		case h := <-handled:
			t.Logf("server A: %s", h)
		case <-time.After(10 * time.Second):
			t.Fatalf("server A did not handle the %v within 10s", m.MessageType())
		}
	}
	if d := cmp.Diff(want, storedLeases(t, store)); d != "" {
		t.Errorf("leases in the store after lab A's packets about lab B (-want +got):\n%s", d)
	}
	if n := srvB.Handler().LeasesInUse(); n != 1 {
		t.Errorf("server B holds %d leases, want 1", n)
	}
}

// TestInventoryDeclines: a decline holds its address in the store for every
// server, one holder per address (two networks' addresses with the same
// low bytes both stay declined), and a MAC cannot decline an address it
// does not hold. No packets: the addresses are only data here.
func TestInventoryDeclines(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, "file://"+filepath.Join(t.TempDir(), "state.db"))
	l := storeleases.NewInventoryLeases(store)
	until := time.Now().Add(10 * time.Minute)
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.5"), netip.MustParseAddr("193.0.2.5")}
	for i, ip := range addrs {
		mac := pxetest.MAC(90 + i)
		if _, _, err := l.Allocate(ctx, dhcp.Allocation{MAC: mac, Start: ip, End: ip, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if err := l.Decline(ctx, mac, ip, until); err != nil {
			t.Fatal(err)
		}
	}
	// Not held by this MAC: left alone.
	if err := l.Decline(ctx, pxetest.MAC(92), netip.MustParseAddr("192.0.2.6"), until); err != nil {
		t.Fatal(err)
	}
	leases, err := l.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, le := range leases {
		got = append(got, fmt.Sprintf("%v declined=%v", le.IP, le.Declined))
	}
	sort.Strings(got)
	if d := cmp.Diff([]string{"192.0.2.5 declined=true", "193.0.2.5 declined=true"}, got); d != "" {
		t.Errorf("leases in the store (-want +got):\n%s", d)
	}
}
