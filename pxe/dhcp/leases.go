package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// Errors of the lease table; a request that meets one gets a NAK or no
// offer.
var (
	ErrPoolExhausted = errors.New("pool exhausted")
	errNoPool        = errors.New("subnet has no pool")
	errAddrInUse     = errors.New("address in use by another MAC")
	errDeclined      = errors.New("address declined recently")
	errNotOurs       = errors.New("address is not one this server would give this MAC")
	errReserved      = errors.New("address reserved for another machine")
)

// commitEvery spaces the Saves of a busy server: a REQUEST waits at most
// this long more for its ACK, and a server that saves no more often than
// this spends little on flushes at any load. Since renewals within
// cacheThreshold save nothing, only new leases wait for a Save: a rack
// booting at once asks for a few hundred a second, and each one's ACK
// waits for a Save in flight, then the rest of the spacing, then its own
// Save. (BenchmarkHandleRequestDurable: the same CPU per ACK at 1 ms as
// at the 5 ms this was, and less time.)
const commitEvery = time.Millisecond

// cacheThreshold is the part of a lease that may have run while a REQUEST
// for it still gets it as it stands: the same expiry, the time left in the
// ACK, nothing to save. A netboot asks for its lease two or three times
// within seconds (the PXE ROM, iPXE, the installer): writing each again
// bought nothing but a flush the ACK waited for. (Kea's lease cache,
// cache-threshold, does the same; 0.25 is its usual setting.)
const cacheThreshold = 0.25

// macKey is a MAC as a map key; the handler only accepts 6-byte MACs.
type macKey [6]byte

func keyOf(mac net.HardwareAddr) (macKey, bool) {
	var k macKey
	if len(mac) != len(k) {
		return k, false
	}
	copy(k[:], mac)
	return k, true
}

func (k macKey) hw() net.HardwareAddr { return net.HardwareAddr(append([]byte(nil), k[:]...)) }

// binding is one MAC's address. An address is held (unavailable to other
// MACs) while its lease or its offer runs; after that it stays recorded so
// the same MAC gets it again, until another MAC needs it.
type binding struct {
	mac      macKey
	ip       netip.Addr
	hostname string
	port     port      // where the lease was asked from, if relayed
	expiry   time.Time // end of the acknowledged lease; zero if only offered
	hold     time.Time // end of an outstanding offer
	// gen is the table's generation once expiry was set: the lease is
	// durable when a Save of that generation (or a later one) returned.
	gen uint64
	// hw is mac as the Leases a snapshot hands the store, made once: a
	// busy server snapshots every binding on every Save. Read-only.
	hw net.HardwareAddr
}

// port is where a relayed request came from: its relay (giaddr) and
// option 82's circuit-id and remote-id.
type port struct {
	relay           netip.Addr
	circuit, remote string
}

func (b *binding) held(now time.Time) bool { return now.Before(b.expiry) || now.Before(b.hold) }

// leaseTable is the server's memory of addresses. Its size is bounded by
// the pools plus the reserved machines that asked: entries are only made
// for pool addresses and for reservations, never for arbitrary requests.
type leaseTable struct {
	store LeaseStore
	// shared is store when several servers allocate from it: then it, not
	// this table, decides which address a MAC gets (see SharedLeaseStore).
	shared SharedLeaseStore
	// nets are the subnets this server answers for. A store shared by the
	// servers of several networks holds their leases too: those are
	// neither loaded nor counted here, so no server hands out, expires or
	// counts another network's addresses.
	nets []netip.Prefix
	// reservedFor, if set, names the machine an address is declared for;
	// such an address is given to that MAC only (see Reservations).
	reservedFor func(netip.Addr) (net.HardwareAddr, bool)
	log         *slog.Logger

	mu       sync.Mutex
	byMAC    map[macKey]*binding
	byIP     map[netip.Addr]*binding
	declined map[netip.Addr]declineMark
	cursor   map[netip.Prefix]netip.Addr // where the next pool scan starts
	gen      uint64                      // bumped by each change Save must see

	// commitMu guards what the committer shares with the callers of
	// afterDurable: those waiting for the next Save, whether a committer
	// runs, and the generation of the last table saved.
	commitMu   sync.Mutex
	waiting    []func(error)
	committing bool
	savedGen   uint64
	committer  sync.WaitGroup
	// lastSave is when the last Save started; commitEvery the least time
	// from it to the next (see afterDurable). The committer alone uses
	// them.
	lastSave    time.Time
	commitEvery time.Duration
	// snap is the committer's snapshot, reused from Save to Save: a
	// LeaseStore's Save must not keep the slice.
	snap []Lease
}

type declineMark struct {
	mac   macKey
	until time.Time
}

func newLeaseTable(store LeaseStore, nets []netip.Prefix, reservedFor func(netip.Addr) (net.HardwareAddr, bool), log *slog.Logger) *leaseTable {
	shared, _ := store.(SharedLeaseStore)
	return &leaseTable{
		commitEvery: commitEvery,
		store:       store,
		shared:      shared,
		nets:        nets,
		reservedFor: reservedFor,
		log:         log,
		byMAC:       make(map[macKey]*binding),
		byIP:        make(map[netip.Addr]*binding),
		declined:    make(map[netip.Addr]declineMark),
		cursor:      make(map[netip.Prefix]netip.Addr),
	}
}

// ours reports whether ip is in one of the server's subnets.
func (t *leaseTable) ours(ip netip.Addr) bool {
	for _, p := range t.nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// load fills the table from the store with the leases of the server's
// subnets; entries that conflict with ones already loaded are dropped (and
// logged) so no address has two MACs.
func (t *leaseTable) load(ctx context.Context) error {
	if t.store == nil {
		return nil
	}
	leases, err := t.store.Load(ctx)
	if err != nil {
		return fmt.Errorf("load leases: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	others := 0
	for _, l := range leases {
		k, ok := keyOf(l.MAC)
		if !ok || !l.IP.Is4() {
			t.log.Warn("dropping malformed stored lease", "mac", l.MAC, "ip", l.IP)
			continue
		}
		if !t.ours(l.IP) {
			others++
			continue
		}
		if l.Declined {
			t.declined[l.IP] = declineMark{mac: k, until: l.Expiry}
			continue
		}
		if t.byIP[l.IP] != nil || t.byMAC[k] != nil {
			t.log.Warn("dropping conflicting stored lease", "mac", l.MAC, "ip", l.IP)
			continue
		}
		b := &binding{mac: k, ip: l.IP, hostname: l.Hostname, expiry: l.Expiry,
			port: port{relay: l.Relay, circuit: l.CircuitID, remote: l.RemoteID}}
		t.byMAC[k] = b
		t.byIP[l.IP] = b
	}
	if others > 0 {
		t.log.Debug("leases of other networks in the store left to their servers", "count", others)
	}
	return nil
}

// snapshot returns what the store keeps: acknowledged bindings and
// declines, in out's memory when it is large enough (the committer reuses
// one slice for every Save: a busy server saves hundreds of times a
// second, and a fresh table each time was most of its page faults). Bare
// offers are not kept; a restart forgets them harmlessly.
func (t *leaseTable) snapshot(out []Lease) ([]Lease, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out = slices.Grow(out[:0], len(t.byIP)+len(t.declined))
	for _, b := range t.byIP {
		if !b.expiry.IsZero() {
			if b.hw == nil {
				b.hw = b.mac.hw()
			}
			out = append(out, Lease{MAC: b.hw, IP: b.ip, Hostname: b.hostname, Expiry: b.expiry,
				Relay: b.port.relay, CircuitID: b.port.circuit, RemoteID: b.port.remote})
		}
	}
	for ip, d := range t.declined {
		out = append(out, Lease{MAC: d.mac.hw(), IP: ip, Expiry: d.until, Declined: true})
	}
	return out, t.gen
}

// persist makes every change made before the call durable.
func (t *leaseTable) persist(ctx context.Context) error {
	t.mu.Lock()
	want := t.gen
	t.mu.Unlock()
	return t.persistThrough(ctx, want)
}

// persistThrough returns once generation want of the table is durable.
func (t *leaseTable) persistThrough(ctx context.Context, want uint64) error {
	done := make(chan error, 1)
	t.afterDurable(ctx, want, func(err error) { done <- err })
	return <-done
}

// afterDurable calls done once generation want of the table (every change
// that made it) is durable, or with the error of the Save that failed to
// make it so: at once if a Save made it durable already. done runs on the
// committer's goroutine, so it must be quick: the next Save waits for it.
//
// Concurrent callers share one Save (group commit), made by a committer
// goroutine that runs while callers wait. Under load, a Save starts at
// most every commitEvery: the changes made meanwhile join it. A disk that
// flushes in a few hundred microseconds otherwise had a flush per few
// leases, and the flushes (and the threads Go wakes around each blocking
// one) were much of the server's CPU. A lone change finds the last Save
// long past and is saved at once.
func (t *leaseTable) afterDurable(ctx context.Context, want uint64, done func(error)) {
	if t.store == nil || t.shared != nil {
		// Nothing to save, or nothing left to: a shared store made every
		// change durable before the table made it.
		done(nil)
		return
	}
	t.commitMu.Lock()
	if t.savedGen >= want {
		t.commitMu.Unlock()
		done(nil)
		return
	}
	t.waiting = append(t.waiting, done)
	start := !t.committing
	t.committing = true
	t.commitMu.Unlock()
	if start {
		t.committer.Add(1)
		go t.saveLoop(context.WithoutCancel(ctx))
	}
}

// saveLoop saves the table until no one waits for a Save.
func (t *leaseTable) saveLoop(ctx context.Context) {
	defer t.committer.Done()
	for {
		if wait := time.Until(t.lastSave.Add(t.commitEvery)); wait > 0 {
			time.Sleep(wait)
		}
		t.commitMu.Lock()
		batch := t.waiting
		t.waiting = nil
		if len(batch) == 0 {
			t.committing = false
			t.commitMu.Unlock()
			return
		}
		t.commitMu.Unlock()
		// Every change the batch waits for was made before it joined:
		// this snapshot holds them all.
		t.lastSave = time.Now()
		leases, gen := t.snapshot(t.snap)
		t.snap = leases
		err := t.store.Save(ctx, leases)
		if err != nil {
			err = fmt.Errorf("save leases: %w", err)
		} else {
			t.commitMu.Lock()
			t.savedGen = gen
			t.commitMu.Unlock()
		}
		for _, done := range batch {
			t.notify(done, err)
		}
	}
}

// notify calls done; a panic in it is logged, and the committer goes on
// for the others.
func (t *leaseTable) notify(done func(error), err error) {
	defer func() {
		if r := recover(); r != nil {
			t.log.Error("panic after a lease save", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	done(err)
}

// wait returns once no Save is under way or waited for.
func (t *leaseTable) wait() { t.committer.Wait() }

// place binds ip to mac, dropping mac's previous binding and any stale
// binding of another MAC at ip. The caller has checked ip is not held by
// another MAC.
func (t *leaseTable) place(k macKey, ip netip.Addr) *binding {
	if b := t.byMAC[k]; b != nil {
		if b.ip == ip {
			return b
		}
		delete(t.byIP, b.ip)
		delete(t.byMAC, k)
		if !b.expiry.IsZero() {
			t.gen++
		}
	}
	if other := t.byIP[ip]; other != nil {
		delete(t.byMAC, other.mac)
		if !other.expiry.IsZero() {
			t.gen++
		}
	}
	b := &binding{mac: k, ip: ip}
	t.byMAC[k] = b
	t.byIP[ip] = b
	return b
}

// usable reports whether ip may be given to mac: not held by another MAC,
// not declined, not reserved for another machine.
func (t *leaseTable) usable(k macKey, ip netip.Addr, now time.Time) error {
	if other := t.byIP[ip]; other != nil && other.mac != k && other.held(now) {
		return errAddrInUse
	}
	if t.reservedForOther(k, ip) {
		return errReserved
	}
	if d, ok := t.declined[ip]; ok {
		if now.Before(d.until) {
			return errDeclined
		}
		delete(t.declined, ip)
		t.gen++
	}
	return nil
}

// reservedForOther reports whether the policy declares ip for a machine
// other than mac. Site validation keeps reservations out of the pools; this
// holds even for a policy whose addresses were not validated so.
func (t *leaseTable) reservedForOther(k macKey, ip netip.Addr) bool {
	if t.reservedFor == nil {
		return false
	}
	mac, ok := t.reservedFor(ip)
	return ok && !bytes.Equal(mac, k[:])
}

// offer picks the address to offer mac in subnet s and holds it until
// hold. reserved, if valid, is the MAC's reservation; requested is the
// client's option 50, honoured when it is a free pool address.
func (t *leaseTable) offer(ctx context.Context, k macKey, s *subnet, reserved, requested netip.Addr, now, hold time.Time) (netip.Addr, error) {
	if t.shared != nil && !reserved.IsValid() {
		return t.offerShared(ctx, k, s, requested, now, hold)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ip, err := t.choose(k, s, reserved, requested, now)
	if err != nil {
		return netip.Addr{}, err
	}
	b := t.place(k, ip)
	if b.hold.Before(hold) {
		b.hold = hold
	}
	return ip, nil
}

func (t *leaseTable) choose(k macKey, s *subnet, reserved, requested netip.Addr, now time.Time) (netip.Addr, error) {
	if reserved.IsValid() {
		return reserved, t.usable(k, reserved, now)
	}
	if !s.hasPool() {
		return netip.Addr{}, errNoPool
	}
	// The same MAC gets the same address back, while it is still free.
	if b := t.byMAC[k]; b != nil && s.inPool(b.ip) && t.usable(k, b.ip, now) == nil {
		return b.ip, nil
	}
	if requested.IsValid() && s.inPool(requested) && t.byIP[requested] == nil && t.usable(k, requested, now) == nil {
		return requested, nil
	}
	// An address never given out, scanning on from where the last scan
	// stopped so that addresses are spread and scans stay short.
	start := t.cursor[s.cidr]
	if !s.inPool(start) {
		start = s.poolStart
	}
	ip := start
	for {
		if s.inPool(ip) && t.byIP[ip] == nil && t.usable(k, ip, now) == nil {
			t.cursor[s.cidr] = s.nextInPool(ip)
			return ip, nil
		}
		ip = s.nextInPool(ip)
		if ip == start {
			break
		}
	}
	// Else the address whose lease ended longest ago.
	var oldest *binding
	for ip := s.poolStart; ; ip = ip.Next() {
		if b := t.byIP[ip]; b != nil && s.inPool(ip) && !b.held(now) && t.usable(k, ip, now) == nil {
			if oldest == nil || b.expiry.Before(oldest.expiry) {
				oldest = b
			}
		}
		if ip == s.poolEnd {
			break
		}
	}
	if oldest == nil {
		return netip.Addr{}, ErrPoolExhausted
	}
	return oldest.ip, nil
}

// committed is a lease commit acknowledged: until expiry; renewed, the
// MAC held a running lease of the address already; gen, the generation of
// the table that holds it (the ACK waits until that is durable).
type committed struct {
	expiry  time.Time
	renewed bool
	gen     uint64
}

// commit acknowledges ip to mac for the lease time (a REQUEST: selecting,
// init-reboot, renewing or rebinding). The address must be the MAC's
// reservation, or the one the MAC holds, or a free pool address (a client
// that kept its lease while the table was lost gets it back). A running
// lease of ip with less than cacheThreshold of it gone, and asked for from
// the same place under the same name, is acknowledged as it stands.
func (t *leaseTable) commit(ctx context.Context, k macKey, s *subnet, reserved, ip netip.Addr, hostname string, at port, now time.Time) (committed, error) {
	if t.shared != nil {
		expiry, renewed, err := t.commitShared(ctx, k, s, reserved, ip, hostname, at, now)
		return committed{expiry: expiry, renewed: renewed}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case reserved.IsValid():
		if ip != reserved {
			return committed{}, errNotOurs
		}
	case !s.inPool(ip):
		return committed{}, errNotOurs
	case t.byMAC[k] != nil && t.byMAC[k].ip == ip:
	case t.byIP[ip] != nil && t.byIP[ip].held(now):
		return committed{}, errAddrInUse
	}
	if err := t.usable(k, ip, now); err != nil {
		return committed{}, err
	}
	renewed := t.running(k, ip, now)
	if b := t.byMAC[k]; renewed && b.hostname == hostname && (!at.relay.IsValid() || b.port == at) &&
		b.expiry.Sub(now) >= s.leaseTime-time.Duration(cacheThreshold*float64(s.leaseTime)) {
		b.hold = time.Time{}
		return committed{expiry: b.expiry, renewed: true, gen: b.gen}, nil
	}
	b := t.place(k, ip)
	b.hostname = hostname
	if at.relay.IsValid() {
		// A renewal unicast straight to us (no relay) keeps the port.
		b.port = at
	}
	b.expiry = now.Add(s.leaseTime)
	b.hold = time.Time{}
	t.gen++
	b.gen = t.gen
	return committed{expiry: b.expiry, renewed: renewed, gen: b.gen}, nil
}

// running reports whether mac holds a lease of ip that has not ended.
// The caller holds t.mu.
func (t *leaseTable) running(k macKey, ip netip.Addr, now time.Time) bool {
	b := t.byMAC[k]
	return b != nil && b.ip == ip && now.Before(b.expiry)
}

// release ends mac's lease on ip now. The binding stays, so the MAC gets
// the address back if no one else took it meanwhile.
func (t *leaseTable) release(ctx context.Context, k macKey, ip netip.Addr, now time.Time) (bool, error) {
	if t.shared != nil {
		// The lease may be another server's doing: the store has it.
		if err := t.shared.Release(ctx, k.hw(), ip); err != nil {
			return false, err
		}
	}
	return t.releaseLocal(k, ip, now), nil
}

func (t *leaseTable) releaseLocal(k macKey, ip netip.Addr, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.byMAC[k]
	if b == nil || b.ip != ip || !b.held(now) {
		return false
	}
	b.expiry, b.hold = now, time.Time{}
	t.gen++
	return true
}

// decline records that mac found ip in use: the address leaves the MAC and
// the pool until until.
func (t *leaseTable) decline(ctx context.Context, k macKey, ip netip.Addr, until time.Time) (bool, error) {
	if t.shared != nil {
		if err := t.shared.Decline(ctx, k.hw(), ip, until); err != nil {
			return false, err
		}
	}
	return t.declineLocal(k, ip, until), nil
}

func (t *leaseTable) declineLocal(k macKey, ip netip.Addr, until time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.byMAC[k]
	if b == nil || b.ip != ip {
		return false
	}
	delete(t.byMAC, k)
	delete(t.byIP, ip)
	t.declined[ip] = declineMark{mac: k, until: until}
	t.gen++
	return true
}

// dropOffer frees an address offered to mac that mac turned down (it chose
// another server). An acknowledged lease is kept.
func (t *leaseTable) dropOffer(k macKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.byMAC[k]; b != nil {
		b.hold = time.Time{}
		if b.expiry.IsZero() {
			delete(t.byMAC, k)
			delete(t.byIP, b.ip)
		}
	}
}

// has reports whether the table has an address for mac, offered or
// leased, whatever its state.
func (t *leaseTable) has(k macKey) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byMAC[k] != nil
}

// leasedIP returns the address acknowledged to mac and still valid.
func (t *leaseTable) leasedIP(k macKey, now time.Time) (netip.Addr, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.byMAC[k]; b != nil && now.Before(b.expiry) {
		return b.ip, true
	}
	return netip.Addr{}, false
}

// macOf returns the MAC ip is acknowledged to, while valid.
func (t *leaseTable) macOf(ip netip.Addr, now time.Time) (macKey, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.byIP[ip]; b != nil && now.Before(b.expiry) {
		return b.mac, true
	}
	return macKey{}, false
}

// inUse counts the acknowledged leases still valid at now.
func (t *leaseTable) inUse(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, b := range t.byIP {
		if now.Before(b.expiry) {
			n++
		}
	}
	return n
}

// size returns the number of bindings and declines, for tests of bounds.
func (t *leaseTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byIP) + len(t.declined)
}

// offerShared asks the shared store for a pool address for mac, held until
// hold, then records it here (for LeasedIP, MACOf and the next request).
// The store is asked without holding t.mu: its round trip must not stall
// the other workers.
func (t *leaseTable) offerShared(ctx context.Context, k macKey, s *subnet, requested netip.Addr, now, hold time.Time) (netip.Addr, error) {
	if !s.hasPool() {
		return netip.Addr{}, errNoPool
	}
	if !s.inPool(requested) {
		requested = netip.Addr{}
	}
	a := Allocation{MAC: k.hw(), Start: s.poolStart, End: s.poolEnd, Exclude: s.excluded, Prefer: requested, TTL: hold.Sub(now)}
	var ip, skipped netip.Addr
	for {
		got, _, err := t.shared.Allocate(ctx, a)
		if err == nil && slices.Contains(a.Exclude, got) {
			err = fmt.Errorf("%w: the store gave %v, excluded", ErrPoolExhausted, got)
		}
		if err != nil {
			if skipped.IsValid() {
				// Leave no hold, however short, on another machine's address.
				_ = t.shared.Release(ctx, a.MAC, skipped)
			}
			return netip.Addr{}, err
		}
		if !t.reservedForOther(k, got) {
			ip = got
			break
		}
		// The store does not know the policy's reservations: ask again
		// without this one. Each round excludes one more address, so the
		// pool's end ends the loop.
		skipped = got
		a.Exclude = append(a.Exclude[:len(a.Exclude):len(a.Exclude)], got)
		a.Prefer = netip.Addr{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.place(k, ip)
	if b.hold.Before(hold) {
		b.hold = hold
	}
	return ip, nil
}

// commitShared acknowledges ip to mac once the shared store has given it
// (a reservation is recorded there too, so every server knows it).
func (t *leaseTable) commitShared(ctx context.Context, k macKey, s *subnet, reserved, ip netip.Addr, hostname string, at port, now time.Time) (time.Time, bool, error) {
	switch {
	case reserved.IsValid() && ip != reserved:
		return time.Time{}, false, errNotOurs
	case !reserved.IsValid() && !s.inPool(ip):
		return time.Time{}, false, errNotOurs
	case !reserved.IsValid() && t.reservedForOther(k, ip):
		return time.Time{}, false, errReserved
	}
	_, expiry, err := t.shared.Allocate(ctx, Allocation{MAC: k.hw(), Hostname: hostname, Start: ip, End: ip, TTL: s.leaseTime})
	if errors.Is(err, ErrPoolExhausted) {
		return time.Time{}, false, errAddrInUse
	}
	if err != nil {
		return time.Time{}, false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.declined, ip)
	renewed := t.running(k, ip, now)
	b := t.place(k, ip)
	b.hostname = hostname
	if at.relay.IsValid() {
		// A renewal unicast straight to us (no relay) keeps the port.
		b.port = at
	}
	b.expiry = expiry
	b.hold = time.Time{}
	t.gen++
	return expiry, renewed, nil
}
