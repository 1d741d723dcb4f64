package etcd_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// TestLeasesWhileLeaderDies: two metal servers allocate DHCP leases
// through a 3-member cluster while its raft leader is killed (SIGKILL).
// An allocation may fail while the others elect a leader (the DHCP server
// then acknowledges nothing and the client asks again); every machine
// ends with a lease, no address is leased twice, and every acknowledged
// lease is the one in the store.
func TestLeasesWhileLeaderDies(t *testing.T) {
	c := startCluster(t, 3)
	ctx := ctxT(t, 120*time.Second)
	var servers []inventory.Store
	for range 2 {
		s, err := inventory.Open(ctx, open(t, c.endpoints(), "/metal/"), inventory.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		servers = append(servers, s)
	}
	const machines = 60
	req := func(i int) inventory.AllocateRequest {
		return inventory.AllocateRequest{MAC: fmt.Sprintf("02:00:00:00:01:%02x", i), TTL: time.Hour,
			Start: netip.MustParseAddr("192.0.2.100"), End: netip.MustParseAddr("192.0.2.199")}
	}

	var (
		mu     sync.Mutex
		acked  = map[string]netip.Addr{} // MAC → the address acknowledged last
		failed int
		wg     sync.WaitGroup
	)
	started := make(chan struct{}, machines) // never blocks: one per machine
	// Four DHCP workers, two per server, each with its own machines.
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := servers[w%2]
			for i := w; i < machines; i += 4 {
				started <- struct{}{}
				for {
					actx, cancel := context.WithTimeout(ctx, 5*time.Second)
					l, err := s.AllocateLease(actx, req(i))
					cancel()
					if err == nil {
						mu.Lock()
						acked[l.MAC] = l.IP
						mu.Unlock()
						break
					}
					mu.Lock()
					failed++
					mu.Unlock()
					if ctx.Err() != nil {
						t.Errorf("machine %d: no lease before the test's deadline: %v", i, err)
						return
					}
					time.Sleep(100 * time.Millisecond) // the client asks again
				}
			}
		}()
	}
	for range machines / 4 {
		<-started
	}
	leader, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	c.stop(leader, true)
	t.Logf("killed %s, the raft leader, after %d of %d allocations began", c.Name(leader), machines/4, machines)
	wg.Wait()
	t.Logf("%d allocations failed while the cluster elected a leader, and were asked again", failed)

	leases, _, err := servers[1].Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byIP := map[netip.Addr]string{}
	stored := map[string]netip.Addr{}
	for _, l := range leases {
		if other, dup := byIP[l.IP]; dup {
			t.Errorf("%v leased to %s and %s", l.IP, other, l.MAC)
		}
		byIP[l.IP] = l.MAC
		stored[l.MAC] = l.IP
	}
	if len(stored) != machines || len(acked) != machines {
		t.Errorf("%d leases stored, %d acknowledged, want %d", len(stored), len(acked), machines)
	}
	for mac, ip := range acked {
		if stored[mac] != ip {
			t.Errorf("%s: acknowledged %v, stored %v", mac, ip, stored[mac])
		}
	}
	// Asked again (a renewal), each machine keeps its address.
	for i := range machines {
		l, err := servers[i%2].AllocateLease(ctx, req(i))
		if err != nil {
			t.Fatalf("renew %d: %v", i, err)
		}
		if l.IP != acked[l.MAC] {
			t.Errorf("%s renewed to %v, had %v", l.MAC, l.IP, acked[l.MAC])
		}
	}
}
