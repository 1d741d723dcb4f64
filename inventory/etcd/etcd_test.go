package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/etcd"
	"github.com/metal-dev/metal/inventory/storetest"
)

func open(t *testing.T, eps []string, prefix string) *etcd.KV {
	t.Helper()
	kv, err := etcd.Open(ctxT(t, 30*time.Second), etcd.Config{Endpoints: eps, Prefix: prefix, SessionTTL: 2, DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestConformance runs the suite on one etcd, each store under its own
// prefix (which also shows sites sharing a cluster stay apart).
func TestConformance(t *testing.T) {
	c := startCluster(t, 1)
	var n atomic.Int64
	prefixes := map[inventory.KV]string{}
	var mu sync.Mutex
	storetest.Run(t, storetest.Backend{
		New: func(t *testing.T) inventory.KV {
			p := fmt.Sprintf("/site%d/", n.Add(1))
			kv := open(t, c.endpoints(), p)
			mu.Lock()
			prefixes[kv] = p
			mu.Unlock()
			return kv
		},
		Peer: func(t *testing.T, kv inventory.KV) inventory.KV {
			mu.Lock()
			p := prefixes[kv]
			mu.Unlock()
			return open(t, c.endpoints(), p)
		},
	})
}

func TestUnreachable(t *testing.T) {
	ctx := ctxT(t, 10*time.Second)
	port := freePort(t) // nothing listens there
	_, err := etcd.Open(ctx, etcd.Config{Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", port)}, DialTimeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("open of a dead endpoint succeeded")
	}
	t.Logf("error: %v", err)
}

// TestThreeMembers writes through a 3-member cluster, stops one member
// mid-way, and checks writes, lease allocation from two servers, and
// elections carry on with the remaining two.
func TestThreeMembers(t *testing.T) {
	c := startCluster(t, 3)
	ctx := ctxT(t, 90*time.Second)
	// Two "metal servers", each talking to the cluster through all members.
	s1, err := inventory.Open(ctx, open(t, c.endpoints(), "/metal/"), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := inventory.Open(ctx, open(t, c.endpoints(), "/metal/"), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	watch, err := s2.Watch(ctx, inventory.WatchOptions{Kinds: []inventory.Kind{inventory.KindMachine}})
	if err != nil {
		t.Fatal(err)
	}

	pool := func(mac string) inventory.AllocateRequest {
		return inventory.AllocateRequest{MAC: mac, Start: netip.MustParseAddr("10.9.0.1"), End: netip.MustParseAddr("10.9.0.40"), TTL: time.Hour}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	write := func(s inventory.Store, from, to int) {
		defer wg.Done()
		for i := from; i < to; i++ {
			mac := fmt.Sprintf("52:54:00:09:00:%02x", i)
			if _, err := s.PutMachine(ctx, inventory.Machine{Name: fmt.Sprintf("m%02d", i), MAC: mac}); err != nil {
				errs <- fmt.Errorf("put m%02d: %w", i, err)
			}
			if _, err := s.AllocateLease(ctx, pool(mac)); err != nil {
				errs <- fmt.Errorf("lease m%02d: %w", i, err)
			}
		}
	}
	wg.Add(2)
	go write(s1, 0, 10)
	go write(s2, 10, 20)
	wg.Wait()

	// Stop one member (the first endpoint both clients know) mid-way.
	c.stop(0, false)
	wg.Add(2)
	go write(s1, 20, 30)
	go write(s2, 30, 40)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	ms, _, err := s1.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 40 {
		t.Errorf("%d machines, want 40", len(ms))
	}
	leases, _, err := s2.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	for _, l := range leases {
		if other, dup := seen[l.IP]; dup {
			t.Errorf("%v leased to %s and %s", l.IP, other, l.MAC)
		}
		seen[l.IP] = l.MAC
	}
	if len(leases) != 40 {
		t.Errorf("%d leases, want 40", len(leases))
	}
	got := 0
	for got < 40 {
		select {
		case ch := <-watch:
			if ch.Err != nil {
				t.Fatalf("watch: %v", ch.Err)
			}
			got++
		case <-time.After(10 * time.Second):
			t.Fatalf("watch delivered %d of 40 machine writes", got)
		}
	}
}

// TestElectionFailover: the leader's server goes away; the other takes over
// and the old leader's Done is closed.
func TestElectionFailover(t *testing.T) {
	c := startCluster(t, 1)
	ctx := ctxT(t, 60*time.Second)
	a, err := inventory.Open(ctx, open(t, c.endpoints(), "/metal/"), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := inventory.Open(ctx, open(t, c.endpoints(), "/metal/"), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ea, _ := a.Election("controller")
	eb, _ := b.Election("controller")
	if err := ea.Campaign(ctx); err != nil {
		t.Fatal(err)
	}
	won := make(chan error, 1)
	go func() { won <- eb.Campaign(ctx) }()
	select {
	case err := <-won:
		t.Fatalf("second server won while the first leads: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if eb.IsLeader() || !ea.IsLeader() {
		t.Fatalf("leaders: a=%v b=%v", ea.IsLeader(), eb.IsLeader())
	}
	doneA := ea.Done()
	a.Close() // the leader's server stops
	select {
	case <-doneA:
	case <-time.After(10 * time.Second):
		t.Error("old leader's Done not closed")
	}
	select {
	case err := <-won:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("second server not elected after the leader left")
	}
	if !eb.IsLeader() {
		t.Error("b not leader after winning")
	}
}

// TestCrashKeepsAcknowledgedWrites kills etcd with SIGKILL while writes are
// in flight, restarts it on the same data, and checks every write that was
// acknowledged is there.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	c := startCluster(t, 1)
	ctx := ctxT(t, 60*time.Second)
	s, err := inventory.Open(ctx, open(t, c.endpoints(), "/metal/"), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	acked.Store(-1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := s.PutMachine(wctx, inventory.Machine{Name: fmt.Sprintf("m%06d", i), MAC: fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))})
			cancel()
			if err != nil {
				return // the server is gone
			}
			acked.Store(int64(i))
		}
	}()
	time.Sleep(700 * time.Millisecond)
	c.stop(0, true)
	close(stop)
	<-done
	s.Close()
	n := acked.Load()
	if n < 3 {
		t.Fatalf("only %d writes before the kill", n+1)
	}
	c.restart(0)
	s, err = inventory.Open(ctx, open(t, c.endpoints(), "/metal/"), inventory.Options{})
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer s.Close()
	for i := int64(0); i <= n; i++ {
		if _, err := s.Machine(ctx, fmt.Sprintf("m%06d", i)); err != nil {
			t.Fatalf("acknowledged write %d of %d lost: %v", i, n+1, err)
		}
	}
	t.Logf("killed after %d acknowledged writes; all present", n+1)
	if _, err := s.PutMachine(ctx, inventory.Machine{Name: "after", MAC: "52:54:00:ff:ff:ff"}); err != nil && !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("write after restart: %v", err)
	}
}
