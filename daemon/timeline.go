package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/storepolicy"
)

// timeline turns the HTTP server's answers into each machine's boot
// timeline in the store: its script, kernel and initrd fetches. The engine
// waits on these events for images that boot without the agent, and
// `metal machines show` and the console print them.
//
// Requests are queued and written in batches apart from the requests (a
// machine's events in order), so a slow store never slows a boot; when the
// queue is full, events are dropped and logged.
//
// The queue is a slice under a lock, not a channel: the writer sleeps
// between batches while events gather, and only the first event after a
// quiet spell wakes it. Through a channel every event woke the goroutine
// that gathered them, which in a rack's boot storm was a thread woken
// (the runtime's startm) for about a fifth of the daemon's wake-ups.
type timeline struct {
	store  inventory.Store
	policy *storepolicy.Policy
	leases multiLeases
	log    *slog.Logger

	qmu sync.Mutex
	// queued are the events gathered for the next batch.
	queued []fetched
	// idle says the writer waits for an event (on wake) rather than for
	// its next turn: the next event queued wakes it.
	idle bool
	wake chan struct{}
	// dropped counts events lost to a full queue since the last warning;
	// a flood of fetches warns once a second, not once per request: the
	// warning must not add load to a daemon already behind.
	dropped  atomic.Int64
	lastWarn atomic.Int64 // unix nanoseconds

	mu   sync.Mutex
	seen map[fetchKey]time.Time // when each machine last fetched each path, for coalescing
	// scripts is seen for script fetches by MACs of up to 7 bytes
	// (Ethernet's, all but InfiniBand's), keyed by the MAC alone in an
	// integer: under a flood of script requests this lookup is on every
	// one, and hashing fetchKey's array and path was most of its cost. A
	// script is its MAC's, whichever way the path spells it.
	scripts map[uint64]time.Time
	pruneAt int // len(seen) + len(scripts) at which old entries are dropped
}

// minPruneAt is the size at which the coalescing map is first pruned.
const minPruneAt = 4096

func newTimeline(store inventory.Store, policy *storepolicy.Policy, leases multiLeases, log *slog.Logger) *timeline {
	return &timeline{store: store, policy: policy, leases: leases, log: log.With("component", "timeline"),
		wake: make(chan struct{}, 1), seen: map[fetchKey]time.Time{}, scripts: map[uint64]time.Time{}, pruneAt: minPruneAt}
}

// observe is the HTTP server's Observe hook. It leaves out repeats on the
// request's own goroutine: under a flood of fetches nearly every request is
// one, and handing each to run cost a goroutine wake-up per request.
func (t *timeline) observe(r pxehttp.Request) {
	if r.Status != 200 && r.Status != 206 {
		return
	}
	mac := t.macOf(r)
	if mac == nil || !t.first(mac, r.Path, time.Now()) {
		return
	}
	t.enqueue(fetched{r, mac})
}

// enqueue queues f for the next batch, or drops it when maxPending wait.
func (t *timeline) enqueue(f fetched) {
	t.qmu.Lock()
	if len(t.queued) >= maxPending {
		t.qmu.Unlock()
		t.drop(f.r)
		return
	}
	t.queued = append(t.queued, f)
	kick := t.idle
	t.idle = false
	t.qmu.Unlock()
	if kick {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// take returns the events queued and empties the queue; when there are
// none, the writer is idle from then on.
func (t *timeline) take() []fetched {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	b := t.queued
	t.queued = nil
	t.idle = len(b) == 0
	return b
}

// dhcpPath stands for a DHCP packet in the timeline's queue and
// coalescing: it is no HTTP path.
const dhcpPath = "dhcp:"

// dhcp notes a DHCP packet from a declared machine: the first sign of life
// of a machine that was powered on, which the engine's stall check waits
// for. Repeats within coalesceWindow are left out, as fetches are.
func (t *timeline) dhcp(mac net.HardwareAddr) {
	if !t.first(mac, dhcpPath, time.Now()) {
		return
	}
	t.enqueue(fetched{pxehttp.Request{Path: dhcpPath, Status: 200}, slices.Clone(mac)})
}

// dhcpContacts is the DHCP servers' boot policy (all of it, reservations
// included), telling the timeline of every packet from a declared machine.
type dhcpContacts struct {
	*storepolicy.Policy
	timeline func() *timeline
}

func (p dhcpContacts) Host(ctx context.Context, mac net.HardwareAddr) (pxe.Host, error) {
	h, err := p.Policy.Host(ctx, mac)
	if t := p.timeline(); err == nil && t != nil {
		t.dhcp(mac)
	}
	return h, err
}

// first reports whether this is mac's first fetch of path within
// coalesceWindow, and notes it.
func (t *timeline) first(mac net.HardwareAddr, path string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k, ok := scriptKey(mac, path); ok {
		if last, ok := t.scripts[k]; ok && now.Sub(last) < coalesceWindow {
			return false
		}
		t.prune(now)
		t.scripts[k] = now
		return true
	}
	k := fetchKey{path: path}
	k.n = uint8(copy(k.mac[:], mac))
	if last, ok := t.seen[k]; ok && now.Sub(last) < coalesceWindow {
		return false
	}
	t.prune(now)
	t.seen[k] = now
	return true
}

// scriptKey is the key of mac's script fetches in t.scripts, if path is
// a script's and mac short enough.
func scriptKey(mac net.HardwareAddr, path string) (uint64, bool) {
	if len(mac) > 7 || !strings.HasPrefix(path, pxehttp.ScriptPrefix) {
		return 0, false
	}
	k := uint64(len(mac)) << 56
	for i, b := range mac {
		k |= uint64(b) << (8 * i)
	}
	return k, true
}

// prune drops what is older than coalesceWindow once the maps hold
// pruneAt entries; t.mu is held.
func (t *timeline) prune(now time.Time) {
	if len(t.seen)+len(t.scripts) < t.pruneAt {
		return
	}
	for k, at := range t.seen {
		if now.Sub(at) >= coalesceWindow {
			delete(t.seen, k)
		}
	}
	for k, at := range t.scripts {
		if now.Sub(at) >= coalesceWindow {
			delete(t.scripts, k)
		}
	}
	// More machines than that fetching within the window (a large fleet
	// booting at once) would otherwise have every request scan them all
	// under the lock.
	t.pruneAt = max(minPruneAt, 2*(len(t.seen)+len(t.scripts)))
}

// drop counts an event lost to a full queue, warning at most once a second.
func (t *timeline) drop(r pxehttp.Request) {
	n := t.dropped.Add(1)
	now, last := time.Now().UnixNano(), t.lastWarn.Load()
	if now-last >= int64(time.Second) && t.lastWarn.CompareAndSwap(last, now) {
		t.dropped.Add(-n)
		t.log.Warn("boot timeline queue full; events dropped", "dropped", n, "path", r.Path, "client", r.Client)
	}
}

// coalesceWindow is how long a repeat of the same fetch by the same
// machine is left out of its timeline: a boot fetches each file once, so
// repeats within it are retries or a client hammering the server, and
// would cost one store write each.
const coalesceWindow = 2 * time.Second

// fetchKey is a machine and a path; the MAC is held in an array (20 bytes,
// the longest net.ParseMAC reads) so a lookup allocates nothing.
type fetchKey struct {
	mac  [20]byte
	n    uint8
	path string
}

type fetched struct {
	r   pxehttp.Request
	mac net.HardwareAddr
}

// Events are written in batches, each batch in one append (see write), so
// that they share the store's commits. After a quiet spell an event is
// written at once; then, for flushDelay (floodDelay after a batch of a
// flood), events gather into the next batch.
const (
	// flushDelay is the least time between batches: far below anything
	// that waits on a boot step.
	flushDelay = 100 * time.Millisecond
	// floodDelay follows a batch of at least floodBatch events: a rack
	// booting at once, when each batch costs a commit that writes a
	// page of each per-machine and per-MAC index for most machines
	// (~37 pages per commit of a 200-machine storm, at 100 ms). Longer
	// batches share those pages; still well below anything that waits on
	// a boot step.
	floodDelay = 500 * time.Millisecond
	floodBatch = 32
	// maxPending bounds the events waiting while a slow store writes the
	// last batch; more are dropped and logged.
	maxPending = 4096
)

// stopGrace is how long the events seen before a stop may take to be
// written after it: the batch being written, and those gathered for the
// next (a server stopped while a rack boots).
const stopGrace = 5 * time.Second

func (t *timeline) run(ctx context.Context) error {
	// Writes outlive ctx by stopGrace: the events are what machines did,
	// and a stop in the middle of a boot storm dropped the batch in flight
	// and those gathered (hundreds, "context canceled").
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, cancel) })()
	for {
		b := t.take()
		if len(b) == 0 {
			select {
			case <-ctx.Done():
				t.flush(wctx)
				return nil
			case <-t.wake:
			}
			continue
		}
		delay := flushDelay
		if len(b) >= floodBatch {
			delay = floodDelay
		}
		next := time.Now().Add(delay)
		t.write(wctx, b)
		// Events gather meanwhile, without waking the writer.
		select {
		case <-ctx.Done():
			t.flush(wctx)
			return nil
		case <-time.After(time.Until(next)):
		}
	}
}

// flush writes what is still queued, once the server stops.
func (t *timeline) flush(ctx context.Context) {
	if b := t.take(); len(b) > 0 {
		t.write(ctx, b)
	}
}

// write records a batch of events in one append: the store writes them
// in their order, so each machine's stay in the order they happened, and
// in as few commits as it can (one for a batch of up to a few hundred on
// bbolt). Appended one by one, on a goroutine per machine, a boot storm's
// batch took a commit per step of a machine and a few more.
func (t *timeline) write(ctx context.Context, batch []fetched) {
	evs := make([]inventory.Event, 0, len(batch))
	for _, f := range batch {
		if e, ok := t.event(ctx, f.r, f.mac); ok {
			evs = append(evs, e)
		}
	}
	if len(evs) == 0 {
		return
	}
	saved, err := t.store.AppendEvents(ctx, evs)
	if err != nil {
		lost := 0
		for _, e := range saved {
			if e.Seq == 0 {
				lost++
			}
		}
		if saved == nil {
			lost = len(evs)
		}
		t.log.Warn("record boot events", "events", len(evs), "lost", lost, "err", err)
	}
}

// event is the timeline's event for a request, if it is one of a known
// machine's boot steps.
func (t *timeline) event(ctx context.Context, r pxehttp.Request, mac net.HardwareAddr) (inventory.Event, bool) {
	m, ok := t.policy.Machine(mac)
	if !ok {
		// Not (yet) seen by the policy, which follows the store: ask the
		// store itself.
		sm, err := t.store.MachineByMAC(ctx, mac.String())
		if err != nil {
			return inventory.Event{}, false // an unknown machine: the agent reports it once it runs
		}
		m = &sm
	}
	kind, msg := inventory.EventDHCPDiscover, "DHCP from "+m.MAC
	if r.Path != dhcpPath {
		var ok bool
		if kind, ok = classify(r.Path, m.Intent); !ok {
			return inventory.Event{}, false
		}
		msg = "fetched " + r.Path
	}
	return inventory.Event{Machine: m.Name, MAC: m.MAC, Kind: kind, Message: msg}, true
}

// macOf names the machine behind a request: scripts carry their MAC in the
// path (which the server parsed: r.MAC); everything else is matched by the
// client's leased address.
func (t *timeline) macOf(r pxehttp.Request) net.HardwareAddr {
	if strings.HasPrefix(r.Path, pxehttp.ScriptPrefix) {
		return r.MAC
	}
	if !r.Client.IsValid() {
		return nil
	}
	// IPv4 or IPv6: DHCPv6's leases are among them.
	if mac, ok := t.leases.MACOf(net.IP(r.Client.AsSlice())); ok {
		return mac
	}
	if mac, ok := t.policy.MACOf(r.Client); ok {
		return mac
	}
	return nil
}

// classify says which step of a boot the path is, judged against the
// machine's current intent.
func classify(path string, in inventory.BootIntent) (inventory.EventKind, bool) {
	switch {
	case strings.HasPrefix(path, pxehttp.ScriptPrefix):
		return inventory.EventScript, true
	case in.Kernel != "" && pathOf(in.Kernel) == path:
		return inventory.EventKernel, true
	}
	for _, initrd := range in.Initrds {
		if pathOf(initrd) == path {
			return inventory.EventInitrd, true
		}
	}
	if in.Task != nil && in.Task.ImageURL != "" && pathOf(in.Task.ImageURL) == path {
		return inventory.EventImage, true
	}
	return "", false
}

// pathOf is the path part of an intent's URL or path.
func pathOf(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Path
}
