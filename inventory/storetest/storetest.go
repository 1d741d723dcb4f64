// Package storetest is the conformance suite every inventory backend runs:
// one set of tests, so the bbolt, etcd and memory backends mean the same
// thing by every operation.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metal-dev/metal/inventory"
)

// Backend is what a backend gives the suite.
type Backend struct {
	// New returns a KV over a fresh, empty store; the suite closes it (through
	// the Store that owns it).
	New func(t *testing.T) inventory.KV
	// Peer returns a second, independent client of the same store as kv (a
	// second etcd connection). Nil for single-process backends: the suite
	// then shares one client between its "servers".
	Peer func(t *testing.T, kv inventory.KV) inventory.KV
}

// Clock is a settable clock for lease expiry and event times.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

func NewClock() *Clock { return &Clock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Run runs the whole suite against b.
func Run(t *testing.T, b Backend) {
	tests := map[string]func(*testing.T, Backend){
		"MachineCRUD":      testMachineCRUD,
		"MachineInvalid":   testMachineInvalid,
		"Watch":            testWatch,
		"LeaseAllocate":    testLeaseAllocate,
		"LeaseConcurrent":  testLeaseConcurrent,
		"Events":           testEvents,
		"EventsConcurrent": testEventsConcurrent,
		"EventsBurst":      testEventsBurst,
		"EventsBatch":      testEventsBatch,
		"ApplyResume":      testApplyResume,
		"Schema":           testSchema,
		"DumpRestore":      testDumpRestore,
		"Election":         testElection,
		"APITokens":        testAPITokens,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) { fn(t, b) })
	}
}

// open opens a store over a fresh KV of b.
func open(t *testing.T, b Backend, opts inventory.Options) (inventory.Store, inventory.KV) {
	t.Helper()
	kv := b.New(t)
	s, err := inventory.Open(ctxT(t), kv, opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, kv
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var ignoreRev = cmpopts.IgnoreFields(inventory.Machine{}, "Revision")

func testMachineCRUD(t *testing.T, b Backend) {
	ctx := ctxT(t)
	clk := NewClock()
	s, _ := open(t, b, inventory.Options{Now: clk.Now})

	want := inventory.Machine{
		Name: "web-01", MAC: "52:54:00:00:01:01",
		Identity: inventory.Identity{IP: netip.MustParseAddr("10.10.0.11"), Image: "debian-12", Labels: map[string]string{"rack": "r1"}},
		Intent:   inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/images/debian-12/linux", Initrds: []string{"/images/debian-12/initrd.gz"}, Cmdline: "console=ttyS0", Token: "t0k"},
		Hardware: &inventory.Hardware{
			CPU: inventory.CPU{Model: "EPYC", Sockets: 1, Cores: 16, Threads: 32}, MemoryBytes: 64 << 30,
			Disks: []inventory.Disk{{Name: "nvme0n1", SizeBytes: 1 << 40}}, NICs: []inventory.NIC{{Name: "eno1", MAC: "52:54:00:00:01:01", SpeedMbps: 10000}},
			DMI: inventory.DMI{Vendor: "QEMU", Product: "Standard PC"}, ReportedAt: clk.Now(),
		},
		Power: inventory.PowerOn, PowerAt: clk.Now(),
	}
	if err := want.SetState(inventory.StateDiscovered, "agent reported hardware", clk.Now()); err != nil {
		t.Fatal(err)
	}
	created, err := s.PutMachine(ctx, want)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if created.Revision == 0 {
		t.Fatal("create returned revision 0")
	}
	if _, err := s.PutMachine(ctx, want); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("second create: got %v, want ErrConflict", err)
	}

	got, err := s.Machine(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(created, got); d != "" {
		t.Errorf("get (-put +get):\n%s", d)
	}
	byMAC, err := s.MachineByMAC(ctx, "52-54-00-00-01-01")
	if err != nil {
		t.Fatalf("by mac: %v", err)
	}
	if d := diff(created, byMAC); d != "" {
		t.Errorf("by mac (-want +got):\n%s", d)
	}

	// CAS: an update at the read revision wins once; the stale copy loses.
	upd := got
	upd.Power = inventory.PowerOff
	upd2, err := s.PutMachine(ctx, upd)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if upd2.Revision <= got.Revision {
		t.Errorf("revision did not grow: %d → %d", got.Revision, upd2.Revision)
	}
	if _, err := s.PutMachine(ctx, upd); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("stale update: got %v, want ErrConflict", err)
	}

	// A second machine may not take web-01's MAC, but may take a free one;
	// moving web-01 to a new MAC frees the old one.
	other := inventory.Machine{Name: "web-02", MAC: "52:54:00:00:01:01"}
	if _, err := s.PutMachine(ctx, other); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("duplicate mac: got %v, want ErrConflict", err)
	}
	moved := upd2
	moved.MAC = "52:54:00:00:01:99"
	if moved, err = s.PutMachine(ctx, moved); err != nil {
		t.Fatalf("move mac: %v", err)
	}
	if _, err := s.MachineByMAC(ctx, "52:54:00:00:01:01"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("old mac after move: got %v, want ErrNotFound", err)
	}
	if _, err := s.PutMachine(ctx, other); err != nil {
		t.Errorf("reuse freed mac: %v", err)
	}

	list, rev, err := s.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev < moved.Revision {
		t.Errorf("list revision %d < last write %d", rev, moved.Revision)
	}
	var names []string
	for _, m := range list {
		names = append(names, m.Name)
	}
	if d := diff([]string{"web-01", "web-02"}, names); d != "" {
		t.Errorf("list (-want +got):\n%s", d)
	}

	// UpdateMachine retries through conflicts.
	if _, err := inventory.UpdateMachine(ctx, s, "web-01", func(m *inventory.Machine) error {
		return m.SetState(inventory.StateReady, "hardware accepted", clk.Now())
	}); err != nil {
		t.Fatalf("update machine: %v", err)
	}

	if err := s.DeleteMachine(ctx, "web-01", moved.Revision); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("delete at stale revision: got %v, want ErrConflict", err)
	}
	if err := s.DeleteMachine(ctx, "web-01", 0); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := s.Machine(ctx, "web-01"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("get deleted: got %v, want ErrNotFound", err)
	}
	if _, err := s.MachineByMAC(ctx, "52:54:00:00:01:99"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("mac of deleted: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteMachine(ctx, "web-01", 0); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("delete twice: got %v, want ErrNotFound", err)
	}
}

func testMachineInvalid(t *testing.T, b Backend) {
	ctx := ctxT(t)
	s, _ := open(t, b, inventory.Options{})
	tests := map[string]struct {
		m    inventory.Machine
		want error
	}{
		"empty name":   {inventory.Machine{MAC: "52:54:00:00:00:01"}, inventory.ErrInvalid},
		"slash name":   {inventory.Machine{Name: "a/b", MAC: "52:54:00:00:00:01"}, inventory.ErrInvalid},
		"bad mac":      {inventory.Machine{Name: "a", MAC: "52:54:00"}, inventory.ErrInvalid},
		"missing mac":  {inventory.Machine{Name: "a"}, inventory.ErrInvalid},
		"update ghost": {inventory.Machine{Name: "ghost", MAC: "52:54:00:00:00:02", Revision: 7}, inventory.ErrConflict},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := s.PutMachine(ctx, tc.m); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := s.Machine(ctx, "nope"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("missing machine: got %v, want ErrNotFound", err)
	}
}

// recv returns the next change, failing the test after a few seconds: the
// netboot servers rely on changes arriving "at once".
func recv(t *testing.T, ch <-chan inventory.Change) inventory.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		if c.Err != nil {
			t.Fatalf("watch error: %v", c.Err)
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change within 10s")
	}
	return inventory.Change{}
}

func testWatch(t *testing.T, b Backend) {
	ctx := ctxT(t)
	clk := NewClock()
	s, _ := open(t, b, inventory.Options{Now: clk.Now})

	machines, err := s.Watch(ctx, inventory.WatchOptions{Kinds: []inventory.Kind{inventory.KindMachine}})
	if err != nil {
		t.Fatal(err)
	}
	everything, err := s.Watch(ctx, inventory.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.PutMachine(ctx, inventory.Machine{Name: "w1", MAC: "52:54:00:00:02:01"})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := s.AppendEvent(ctx, inventory.Event{Machine: "w1", Kind: inventory.EventDHCPOffer, Message: "offered 10.0.0.5"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.AllocateLease(ctx, inventory.AllocateRequest{MAC: "52:54:00:00:02:01", Start: netip.MustParseAddr("10.0.0.5"), End: netip.MustParseAddr("10.0.0.5"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMachine(ctx, "w1", 0); err != nil {
		t.Fatal(err)
	}

	want := []inventory.Change{
		{Kind: inventory.KindMachine, Revision: m.Revision, Machine: &m},
		{Kind: inventory.KindEvent, Event: &ev},
		{Kind: inventory.KindLease, Revision: l.Revision, Lease: &l},
		{Kind: inventory.KindMachine, Deleted: true, Machine: &inventory.Machine{Name: "w1"}},
	}
	var got []inventory.Change
	for range want {
		got = append(got, recv(t, everything))
	}
	opts := cmp.Options{cmpopts.IgnoreFields(inventory.Change{}, "Revision"), cmpopts.IgnoreFields(inventory.Machine{}, "Revision")}
	if d := diff(want, got, opts); d != "" {
		t.Errorf("all-kinds watch (-want +got):\n%s", d)
	}
	if got[0].Revision != m.Revision || got[2].Revision != l.Revision {
		t.Errorf("change revisions %d, %d; writes were at %d, %d", got[0].Revision, got[2].Revision, m.Revision, l.Revision)
	}
	if c := recv(t, machines); c.Kind != inventory.KindMachine || c.Deleted {
		t.Errorf("machine watch first change: %+v", c)
	}
	if c := recv(t, machines); c.Kind != inventory.KindMachine || !c.Deleted {
		t.Errorf("machine watch second change: %+v", c)
	}

	// List-then-watch misses nothing written in between.
	_, rev, err := s.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := s.PutMachine(ctx, inventory.Machine{Name: "w2", MAC: "52:54:00:00:02:02"})
	if err != nil {
		t.Fatal(err)
	}
	late, err := s.Watch(ctx, inventory.WatchOptions{Kinds: []inventory.Kind{inventory.KindMachine}, FromRevision: rev})
	if err != nil {
		t.Fatal(err)
	}
	if c := recv(t, late); c.Machine == nil || c.Machine.Name != "w2" || c.Revision != m2.Revision {
		t.Errorf("watch from revision %d: got %+v, want w2 at %d", rev, c, m2.Revision)
	}

	// Ending the context closes the channel.
	wctx, cancel := context.WithCancel(ctx)
	w, err := s.Watch(wctx, inventory.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case _, ok := <-w:
		for ok {
			_, ok = <-w
		}
	case <-time.After(10 * time.Second):
		t.Error("watch not closed 10s after its context ended")
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func testLeaseAllocate(t *testing.T, b Backend) {
	ctx := ctxT(t)
	clk := NewClock()
	s, _ := open(t, b, inventory.Options{Now: clk.Now})
	const (
		macA = "52:54:00:00:03:0a"
		macB = "52:54:00:00:03:0b"
		macC = "52:54:00:00:03:0c"
	)
	pool := func(mac string) inventory.AllocateRequest {
		return inventory.AllocateRequest{MAC: mac, Start: addr("10.0.0.10"), End: addr("10.0.0.12"), Exclude: []netip.Addr{addr("10.0.0.11")}, TTL: time.Hour}
	}

	a, err := s.AllocateLease(ctx, pool(macA))
	if err != nil {
		t.Fatal(err)
	}
	b1, err := s.AllocateLease(ctx, pool(macB))
	if err != nil {
		t.Fatal(err)
	}
	got := []netip.Addr{a.IP, b1.IP}
	if a.IP == b1.IP || a.IP == addr("10.0.0.11") || b1.IP == addr("10.0.0.11") {
		t.Fatalf("two leases share or use an excluded address: %v", got)
	}
	if _, err := s.AllocateLease(ctx, pool(macC)); !errors.Is(err, inventory.ErrPoolExhausted) {
		t.Errorf("third MAC in a two-address pool: got %v, want ErrPoolExhausted", err)
	}

	// Renewal keeps the address, moves the expiry, and ignores Prefer.
	clk.Advance(30 * time.Minute)
	req := pool(macA)
	req.Prefer = b1.IP
	renewed, err := s.AllocateLease(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.IP != a.IP || !renewed.Expiry.Equal(clk.Now().Add(time.Hour)) {
		t.Errorf("renewal: got %v until %v, want %v until %v", renewed.IP, renewed.Expiry, a.IP, clk.Now().Add(time.Hour))
	}

	// B's lease runs out (it was not renewed): C may now take its address.
	clk.Advance(45 * time.Minute)
	c, err := s.AllocateLease(ctx, pool(macC))
	if err != nil {
		t.Fatalf("allocate after expiry: %v", err)
	}
	if c.IP != b1.IP {
		t.Errorf("C got %v, want B's expired %v", c.IP, b1.IP)
	}
	if _, err := s.Lease(ctx, macB); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("evicted lease of B: got %v, want ErrNotFound", err)
	}
	byIP, err := s.LeaseByIP(ctx, c.IP)
	if err != nil || byIP.MAC != macC {
		t.Errorf("lease by ip %v: %+v, %v", c.IP, byIP, err)
	}

	// Prefer is honoured when free; a reservation is a one-address range.
	if err := s.ReleaseLease(ctx, macA); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLease(ctx, macA); err != nil {
		t.Errorf("release twice: %v", err)
	}
	req = pool(macB)
	req.Prefer = a.IP
	if l, err := s.AllocateLease(ctx, req); err != nil || l.IP != a.IP {
		t.Errorf("preferred free address: got %v, %v; want %v", l.IP, err, a.IP)
	}
	res := inventory.AllocateRequest{MAC: macA, Start: addr("10.0.1.7"), End: addr("10.0.1.7"), TTL: time.Hour, Hostname: "web-07"}
	if l, err := s.AllocateLease(ctx, res); err != nil || l.IP != addr("10.0.1.7") || l.Hostname != "web-07" {
		t.Errorf("reservation: got %+v, %v", l, err)
	}
	// Moving a MAC to another range frees its old address.
	res2 := res
	res2.Start, res2.End = addr("10.0.2.7"), addr("10.0.2.7")
	if _, err := s.AllocateLease(ctx, res2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LeaseByIP(ctx, addr("10.0.1.7")); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("old address after move: got %v, want ErrNotFound", err)
	}
	leases, _, err := s.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, l := range leases {
		ips = append(ips, l.MAC+"="+l.IP.String())
	}
	wantIPs := []string{macB + "=" + a.IP.String(), macC + "=" + c.IP.String(), macA + "=10.0.2.7"}
	if d := diff(wantIPs, ips, cmpopts.SortSlices(func(a, b string) bool { return a < b })); d != "" {
		t.Errorf("leases (-want +got):\n%s", d)
	}

	bad := map[string]inventory.AllocateRequest{
		"ipv6":     {MAC: macA, Start: addr("fd00::1"), End: addr("fd00::2"), TTL: time.Hour},
		"reversed": {MAC: macA, Start: addr("10.0.0.9"), End: addr("10.0.0.1"), TTL: time.Hour},
		"no ttl":   {MAC: macA, Start: addr("10.0.0.1"), End: addr("10.0.0.9")},
		"bad mac":  {MAC: "zz", Start: addr("10.0.0.1"), End: addr("10.0.0.9"), TTL: time.Hour},
	}
	for name, req := range bad {
		if _, err := s.AllocateLease(ctx, req); !errors.Is(err, inventory.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

// testLeaseConcurrent runs allocators on two clients (two etcd connections,
// standing for two metal servers) against one small pool: every MAC gets an
// address, no address goes to two MACs.
func testLeaseConcurrent(t *testing.T, b Backend) {
	ctx := ctxT(t)
	s1, kv := open(t, b, inventory.Options{})
	s2 := s1
	if b.Peer != nil {
		var err error
		s2, err = inventory.Open(ctx, b.Peer(t, kv), inventory.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s2.Close() })
	}
	const workers, perWorker = 6, 8
	size := workers * perWorker
	start := addr("10.20.0.1")
	end := start
	for i := 1; i < size; i++ {
		end = end.Next()
	}
	var wg sync.WaitGroup
	errs := make(chan error, size)
	for w := range workers {
		s := s1
		if w%2 == 1 {
			s = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				mac := fmt.Sprintf("52:54:00:20:%02x:%02x", w, i)
				if _, err := s.AllocateLease(ctx, inventory.AllocateRequest{MAC: mac, Start: start, End: end, TTL: time.Hour}); err != nil {
					errs <- fmt.Errorf("%s: %w", mac, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	leases, _, err := s1.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	holder := map[netip.Addr]string{}
	macs := map[string]bool{}
	for _, l := range leases {
		if prev, dup := holder[l.IP]; dup {
			t.Errorf("%v given to %s and %s", l.IP, prev, l.MAC)
		}
		holder[l.IP] = l.MAC
		macs[l.MAC] = true
		own, err := s2.Lease(ctx, l.MAC)
		if err != nil || own.IP != l.IP {
			t.Errorf("lease of %s: by ip %v, by mac %+v (%v)", l.MAC, l.IP, own, err)
		}
	}
	if len(leases) != size || len(macs) != size {
		t.Errorf("%d leases for %d MACs, want %d", len(leases), len(macs), size)
	}
	if _, err := s2.AllocateLease(ctx, inventory.AllocateRequest{MAC: "52:54:00:20:ff:ff", Start: start, End: end, TTL: time.Hour}); !errors.Is(err, inventory.ErrPoolExhausted) {
		t.Errorf("full pool: got %v, want ErrPoolExhausted", err)
	}
}

func testEvents(t *testing.T, b Backend) {
	ctx := ctxT(t)
	clk := NewClock()
	const keep = 10
	s, _ := open(t, b, inventory.Options{Now: clk.Now, EventRetention: keep})
	kinds := []inventory.EventKind{inventory.EventDHCPOffer, inventory.EventTFTP, inventory.EventScript, inventory.EventKernel, inventory.EventInitrd, inventory.EventAgent}
	var all []inventory.Event
	for i := range 25 {
		e := inventory.Event{MAC: fmt.Sprintf("52:54:00:00:04:%02x", i%2), Kind: kinds[i%len(kinds)], Message: fmt.Sprintf("step %d", i)}
		if i%2 == 0 && i >= 4 {
			e.Machine = "m0" // named once the site knew it; earlier boots only by MAC
		}
		clk.Advance(time.Second)
		got, err := s.AppendEvent(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != int64(i+1) {
			t.Fatalf("event %d got seq %d", i, got.Seq)
		}
		all = append(all, got)
	}
	tests := map[string]struct {
		q    inventory.EventQuery
		want []inventory.Event
	}{
		"retained":  {inventory.EventQuery{}, all[25-keep:]},
		"after":     {inventory.EventQuery{AfterSeq: 20}, all[20:]},
		"limit":     {inventory.EventQuery{AfterSeq: 17, Limit: 3}, all[17:20]},
		"by name":   {inventory.EventQuery{Machine: "m0"}, pick(all[25-keep:], func(e inventory.Event) bool { return e.Machine == "m0" })},
		"by mac":    {inventory.EventQuery{MAC: "52:54:00:00:04:01"}, pick(all[25-keep:], func(e inventory.Event) bool { return e.MAC == "52:54:00:00:04:01" })},
		"name+mac":  {inventory.EventQuery{Machine: "m0", MAC: "52:54:00:00:04:01"}, pick(all[25-keep:], func(e inventory.Event) bool { return e.Machine == "m0" || e.MAC == "52:54:00:00:04:01" })},
		"no events": {inventory.EventQuery{Machine: "nobody"}, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := s.Events(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(tc.want, got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	// Trimming also drops the per-machine index: the store holds no more
	// than keep events under any key.
	var raw int
	if _, err := s.Dump(ctx, func(r inventory.Record) error {
		if strings.HasPrefix(r.Key, "ev") {
			raw++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if maxRaw := keep * 3; raw > maxRaw {
		t.Errorf("%d event keys stored, want at most %d", raw, maxRaw)
	}
	if _, err := s.AppendEvent(ctx, inventory.Event{}); !errors.Is(err, inventory.ErrInvalid) {
		t.Errorf("event without kind: got %v, want ErrInvalid", err)
	}
}

// testEventsConcurrent appends from many goroutines at once (on etcd, half
// of them through a second server): every acknowledged event is stored
// once under the Seq it was given, Seqs have no gaps, each appender's
// events keep its order, and retention still holds.
func testEventsConcurrent(t *testing.T, b Backend) {
	ctx := ctxT(t)
	const appenders, each, keep = 8, 25, 150
	s1, kv := open(t, b, inventory.Options{EventRetention: keep})
	s2 := s1
	if b.Peer != nil {
		var err error
		s2, err = inventory.Open(ctx, b.Peer(t, kv), inventory.Options{EventRetention: keep})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s2.Close() })
	}
	acked := make([][]inventory.Event, appenders)
	var wg sync.WaitGroup
	for a := range appenders {
		s := s1
		if a%2 == 1 {
			s = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e, err := s.AppendEvent(ctx, inventory.Event{Machine: fmt.Sprintf("m%d", a), Kind: inventory.EventAgent, Message: fmt.Sprintf("step %d", i)})
				if err != nil {
					t.Error(err)
					return
				}
				acked[a] = append(acked[a], e)
			}
		}()
	}
	wg.Wait()
	bySeq := map[int64]inventory.Event{}
	for a, evs := range acked {
		for i, e := range evs {
			if prev, dup := bySeq[e.Seq]; dup {
				t.Fatalf("seq %d given to %+v and %+v", e.Seq, prev, e)
			}
			bySeq[e.Seq] = e
			if i > 0 && e.Seq <= evs[i-1].Seq {
				t.Errorf("appender %d: event %d has seq %d after %d", a, i, e.Seq, evs[i-1].Seq)
			}
		}
	}
	const total = appenders * each
	for seq := int64(1); seq <= total; seq++ {
		if _, ok := bySeq[seq]; !ok {
			t.Fatalf("no event acknowledged with seq %d of 1..%d", seq, total)
		}
	}
	got, err := s1.Events(ctx, inventory.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var want []inventory.Event
	for seq := int64(total - keep + 1); seq <= total; seq++ {
		want = append(want, bySeq[seq])
	}
	if d := diff(want, got); d != "" {
		t.Errorf("stored events (-acknowledged +stored):\n%s", d)
	}
}

// testEventsBurst appends one event from each of many goroutines at once,
// as a rack booting together does (more than one Txn of etcd's size
// holds, so a backend that takes larger Txns writes them in fewer): every
// event is acknowledged with its own Seq, without gaps, and retention
// trims the store to the last ones.
func testEventsBurst(t *testing.T, b Backend) {
	ctx := ctxT(t)
	const appenders, keep = 400, 50
	s, _ := open(t, b, inventory.Options{EventRetention: keep})
	acked := make([]inventory.Event, appenders)
	var wg sync.WaitGroup
	for a := range appenders {
		wg.Go(func() {
			e, err := s.AppendEvent(ctx, inventory.Event{Machine: fmt.Sprintf("m%d", a), Kind: inventory.EventAgent, Message: "up"})
			if err != nil {
				t.Error(err)
			}
			acked[a] = e
		})
	}
	wg.Wait()
	bySeq := map[int64]inventory.Event{}
	for _, e := range acked {
		if prev, dup := bySeq[e.Seq]; dup {
			t.Fatalf("seq %d given to %+v and %+v", e.Seq, prev, e)
		}
		bySeq[e.Seq] = e
	}
	var want []inventory.Event
	for seq := int64(1); seq <= appenders; seq++ {
		e, ok := bySeq[seq]
		if !ok {
			t.Fatalf("no event acknowledged with seq %d of 1..%d", seq, appenders)
		}
		if seq > appenders-keep {
			want = append(want, e)
		}
	}
	got, err := s.Events(ctx, inventory.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(want, got); d != "" {
		t.Errorf("stored events (-acknowledged +stored):\n%s", d)
	}
}

// testEventsBatch appends lists of events with AppendEvents, alone or
// while others append one by one: each list is stored whole, in its order
// (with Seqs that only grow), also when it is longer than one Txn holds;
// a list with an invalid event writes none of it.
func testEventsBatch(t *testing.T, b Backend) {
	batch := func(n int, machine string) []inventory.Event {
		evs := make([]inventory.Event, n)
		for i := range evs {
			evs[i] = inventory.Event{Machine: machine, MAC: "52:54:00:00:05:01", Kind: inventory.EventScript, Message: fmt.Sprintf("step %d", i)}
		}
		return evs
	}
	tests := map[string]struct {
		evs     []inventory.Event
		singles int // events appended one by one meanwhile, by 4 goroutines
		invalid bool
	}{
		"one":                  {evs: batch(1, "m1")},
		"a few":                {evs: batch(10, "m1")},
		"longer than a Txn":    {evs: batch(600, "m1")},
		"among single appends": {evs: batch(300, "m1"), singles: 200},
		"an invalid event":     {evs: append(batch(5, "m1"), inventory.Event{Machine: "m1"}), invalid: true},
		"an invalid machine":   {evs: append(batch(5, "m1"), batch(1, "bad/name")...), invalid: true},
		"empty":                {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			s, _ := open(t, b, inventory.Options{EventRetention: 10000})
			var wg sync.WaitGroup
			singles := make([][]inventory.Event, 4)
			for g := range singles {
				wg.Go(func() {
					for i := range tc.singles / len(singles) {
						e, err := s.AppendEvent(ctx, inventory.Event{Machine: fmt.Sprintf("s%d", g), Kind: inventory.EventAgent, Message: fmt.Sprintf("single %d", i)})
						if err != nil {
							t.Error(err)
							return
						}
						singles[g] = append(singles[g], e)
					}
				})
			}
			got, err := s.AppendEvents(ctx, tc.evs)
			wg.Wait()
			if tc.invalid {
				if !errors.Is(err, inventory.ErrInvalid) {
					t.Fatalf("got %v, want ErrInvalid", err)
				}
				if stored, err := s.Events(ctx, inventory.EventQuery{Machine: "m1"}); err != nil || len(stored) != 0 {
					t.Fatalf("an invalid list stored %d events (%v), want none", len(stored), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.evs) {
				t.Fatalf("%d events returned, want %d", len(got), len(tc.evs))
			}
			for i, e := range got {
				if e.Message != tc.evs[i].Message || (i > 0 && e.Seq <= got[i-1].Seq) {
					t.Fatalf("event %d is %q with seq %d after seq %d, want %q in order", i, e.Message, e.Seq, got[max(i-1, 0)].Seq, tc.evs[i].Message)
				}
			}
			stored, err := s.Events(ctx, inventory.EventQuery{Machine: "m1"})
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(got, stored, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("stored events (-returned +stored):\n%s", d)
			}
			all, err := s.Events(ctx, inventory.EventQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if want := len(tc.evs) + tc.singles; len(all) != want || (want > 0 && all[want-1].Seq != int64(want)) {
				t.Errorf("%d events stored, want %d with seqs 1..%d", len(all), want, want)
			}
		})
	}
}

func pick(es []inventory.Event, keep func(inventory.Event) bool) []inventory.Event {
	var out []inventory.Event
	for _, e := range es {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

func testApplyResume(t *testing.T, b Backend) {
	ctx := ctxT(t)
	clk := NewClock()
	kv := b.New(t)
	s, err := inventory.Open(ctx, kv, inventory.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	run, err := s.PutApplyRun(ctx, inventory.ApplyRun{ID: "20300102T030405Z-1", PlanDigest: "sha256:abc", State: inventory.RunRunning, StartedAt: clk.Now()})
	if err != nil {
		t.Fatal(err)
	}
	steps := map[string]inventory.RunState{"web-01": inventory.RunDone, "web-02": inventory.RunRunning, "web-03": inventory.RunFailed, "web-04": inventory.RunPending}
	for m, st := range steps {
		if _, err := s.PutApplyStep(ctx, run.ID, inventory.ApplyStep{Machine: m, Step: "install", State: st}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutApplyStep(ctx, "no-such-run", inventory.ApplyStep{Machine: "x", State: inventory.RunDone}); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("step of missing run: got %v, want ErrNotFound", err)
	}
	if _, err := s.PutApplyRun(ctx, inventory.ApplyRun{ID: run.ID, PlanDigest: "sha256:other"}); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("recreate run: got %v, want ErrConflict", err)
	}

	// The apply is "interrupted": reopen the store as a restarted metal
	// would (where the backend allows) and resume from what was recorded.
	if b.Peer != nil {
		s2, err := inventory.Open(ctx, b.Peer(t, kv), inventory.Options{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		s.Close()
		s = s2
	} else {
		defer s.Close()
	}
	got, err := s.ApplyRun(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.PlanDigest != "sha256:abc" || got.Revision != run.Revision {
		t.Errorf("run: %+v", got)
	}
	if d := diff([]string{"web-02", "web-03", "web-04"}, got.Unfinished()); d != "" {
		t.Errorf("unfinished (-want +got):\n%s", d)
	}
	st := got.Steps["web-02"]
	st.State = inventory.RunDone
	if _, err := s.PutApplyStep(ctx, run.ID, st); err != nil {
		t.Fatalf("finish step: %v", err)
	}
	if _, err := s.PutApplyStep(ctx, run.ID, st); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("stale step: got %v, want ErrConflict", err)
	}
	runs, err := s.ApplyRuns(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || len(runs[0].Steps) != 4 || runs[0].Steps["web-02"].State != inventory.RunDone {
		t.Errorf("runs: %+v", runs)
	}
}

func testSchema(t *testing.T, b Backend) {
	ctx := ctxT(t)
	tests := map[string]struct {
		seed    []inventory.Op
		wantErr error
		wantMsg string
	}{
		"empty store is initialised": {},
		"newer schema refused":       {seed: []inventory.Op{inventory.Put("meta/schema", []byte("99"))}, wantErr: inventory.ErrSchemaTooNew, wantMsg: "schema version 99 is newer than this metal understands (1)"},
		"foreign data refused":       {seed: []inventory.Op{inventory.Put("something/else", []byte("x"))}, wantErr: inventory.ErrInvalid, wantMsg: "no schema version"},
		"current schema opens":       {seed: []inventory.Op{inventory.Put("meta/schema", []byte("1"))}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			kv := b.New(t)
			if tc.seed != nil {
				if _, _, err := kv.Txn(ctx, inventory.Txn{Then: tc.seed}); err != nil {
					t.Fatal(err)
				}
			}
			s, err := inventory.Open(ctx, kv, inventory.Options{})
			if !errors.Is(err, tc.wantErr) || (tc.wantMsg != "" && !strings.Contains(fmt.Sprint(err), tc.wantMsg)) {
				t.Fatalf("open: got %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
			}
			if err != nil {
				kv.Close()
				return
			}
			defer s.Close()
			if s.SchemaVersion() != inventory.CurrentSchemaVersion {
				t.Errorf("schema %d", s.SchemaVersion())
			}
		})
	}
	t.Run("newer snapshot refused", func(t *testing.T) {
		s, _ := open(t, b, inventory.Options{})
		err := s.Restore(ctx, []inventory.Record{{Key: "meta/schema", Value: []byte("7")}}, inventory.RestoreOptions{Replace: true})
		if !errors.Is(err, inventory.ErrSchemaTooNew) {
			t.Errorf("restore newer: got %v, want ErrSchemaTooNew", err)
		}
	})
}

func testDumpRestore(t *testing.T, b Backend) {
	ctx := ctxT(t)
	clk := NewClock()
	src, _ := open(t, b, inventory.Options{Now: clk.Now})
	for i := range 5 {
		if _, err := src.PutMachine(ctx, inventory.Machine{Name: fmt.Sprintf("m%d", i), MAC: fmt.Sprintf("52:54:00:00:05:%02x", i), State: inventory.StateReady}); err != nil {
			t.Fatal(err)
		}
		if _, err := src.AppendEvent(ctx, inventory.Event{Machine: fmt.Sprintf("m%d", i), Kind: inventory.EventAgent}); err != nil {
			t.Fatal(err)
		}
		if _, err := src.AllocateLease(ctx, inventory.AllocateRequest{MAC: fmt.Sprintf("52:54:00:00:05:%02x", i), Start: addr("10.5.0.1"), End: addr("10.5.0.200"), TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	var recs []inventory.Record
	info, err := src.Dump(ctx, func(r inventory.Record) error { recs = append(recs, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if info.Schema != inventory.CurrentSchemaVersion || info.Records != len(recs) || info.Revision == 0 {
		t.Errorf("dump info %+v for %d records", info, len(recs))
	}

	dst, _ := open(t, b, inventory.Options{Now: clk.Now})
	if err := dst.Restore(ctx, recs, inventory.RestoreOptions{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := dst.Restore(ctx, recs, inventory.RestoreOptions{}); !errors.Is(err, inventory.ErrNotEmpty) {
		t.Errorf("restore into non-empty: got %v, want ErrNotEmpty", err)
	}
	// Revisions differ between stores; everything else is equal.
	wantM, _, _ := src.Machines(ctx)
	gotM, _, err := dst.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(wantM, gotM, ignoreRev); d != "" {
		t.Errorf("machines (-src +dst):\n%s", d)
	}
	wantE, _ := src.Events(ctx, inventory.EventQuery{})
	gotE, _ := dst.Events(ctx, inventory.EventQuery{})
	if d := diff(wantE, gotE); d != "" {
		t.Errorf("events (-src +dst):\n%s", d)
	}
	wantL, _, _ := src.Leases(ctx)
	gotL, _, _ := dst.Leases(ctx)
	if d := diff(wantL, gotL, cmpopts.IgnoreFields(inventory.Lease{}, "Revision")); d != "" {
		t.Errorf("leases (-src +dst):\n%s", d)
	}
	// The restored store carries on: the event sequence continues.
	if e, err := dst.AppendEvent(ctx, inventory.Event{Kind: inventory.EventApply}); err != nil || e.Seq != 6 {
		t.Errorf("append after restore: seq %d, %v; want 6", e.Seq, err)
	}
	// Replace drops what was there.
	if err := dst.Restore(ctx, recs[:1], inventory.RestoreOptions{Replace: true}); err == nil {
		t.Errorf("restore without schema key accepted")
	}
	var small []inventory.Record
	for _, r := range recs {
		if r.Key == "meta/schema" || r.Key == "machines/m1" || r.Key == "macs/52:54:00:00:05:01" {
			small = append(small, r)
		}
	}
	if err := dst.Restore(ctx, small, inventory.RestoreOptions{Replace: true}); err != nil {
		t.Fatal(err)
	}
	if ms, _, _ := dst.Machines(ctx); len(ms) != 1 || ms[0].Name != "m1" {
		t.Errorf("after replace: %+v", ms)
	}
}

func testElection(t *testing.T, b Backend) {
	ctx := ctxT(t)
	s, _ := open(t, b, inventory.Options{})
	e, err := s.Election("controller")
	if err != nil {
		t.Fatal(err)
	}
	if e.IsLeader() {
		t.Error("leader before campaigning")
	}
	if err := e.Campaign(ctx); err != nil {
		t.Fatal(err)
	}
	if !e.IsLeader() {
		t.Error("not leader after campaign")
	}
	done := e.Done()
	if err := e.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("Done not closed after Resign")
	}
	if e.IsLeader() {
		t.Error("leader after resign")
	}
	if _, err := s.Election("bad/name"); !errors.Is(err, inventory.ErrInvalid) {
		t.Errorf("bad election name: got %v", err)
	}
}

// diff is cmp.Diff that compares netip.Addr by value.
func diff(want, got any, opts ...cmp.Option) string {
	return cmp.Diff(want, got, append(opts, cmpopts.EquateComparable(netip.Addr{}))...)
}
