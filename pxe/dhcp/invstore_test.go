package dhcp

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/etcdtest"
	"github.com/metal-dev/metal/pxe/pxetest"
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
	open := func() LeaseStore {
		store = openStore(t, url)
		return NewInventoryLeases(store)
	}
	checkRestartKeepsLeases(t, pxetest.NewLab(t), 30, open, func(ipA, ipB string) {
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
	cfg := labConfig()
	cfg.Subnets[0].PoolStart = netip.MustParseAddr("192.0.2.100")
	cfg.Subnets[0].PoolEnd = netip.MustParseAddr("192.0.2.105")

	labs := []*pxetest.Lab{pxetest.NewLab(t), pxetest.NewLab(t)}
	stores := []inventory.Store{openStore(t, url), openStore(t, url)}
	for i, lab := range labs {
		startServer(t, lab, cfg, newTestPolicy(), NewInventoryLeases(stores[i]))
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
		clients = append(clients, client{ns: labs[i%2].AddHost(fmt.Sprintf("c%d", i), mac), hook: envScript(t, dir), dir: dir, mac: mac.String()})
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
	if ip, err := leaseOnce(late, envScript(t, dir), dir, 3); err == nil {
		t.Errorf("a seventh client got %s from a pool of six held by others", ip)
	}
}
