package daemon

import (
	"context"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metal-dev/metal/inventory"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/storepolicy"
)

// timeline turns the HTTP server's answers into each machine's boot
// timeline in the store: its script, kernel and initrd fetches. The engine
// waits on these events for images that boot without the agent, and
// `metal machines show` and the console print them.
//
// Requests are queued and written by a few goroutines (a machine's always
// by the same one), so a slow store never slows a boot; when a queue is
// full, events are dropped and logged.
type timeline struct {
	store  inventory.Store
	policy *storepolicy.Policy
	leases multiLeases
	log    *slog.Logger
	queue  chan pxehttp.Request
	// dropped counts events lost to a full queue since the last warning;
	// a flood of fetches warns once a second, not once per request (which
	// doubled the log and its cost under load).
	dropped  atomic.Int64
	lastWarn atomic.Int64 // unix nanoseconds
}

func newTimeline(store inventory.Store, policy *storepolicy.Policy, leases multiLeases, log *slog.Logger) *timeline {
	return &timeline{store: store, policy: policy, leases: leases, log: log.With("component", "timeline"),
		queue: make(chan pxehttp.Request, 1024)}
}

// observe is the HTTP server's Observe hook.
func (t *timeline) observe(r pxehttp.Request) {
	if r.Status != 200 && r.Status != 206 {
		return
	}
	select {
	case t.queue <- r:
	default:
		t.drop(r)
	}
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

type fetchKey struct{ mac, path string }

// timelineWriters is how many goroutines write events: each machine's
// events go through one of them, in order, and concurrent appends of
// different machines share the store's commits (inventory batches them),
// where one writer paid a commit per event.
const timelineWriters = 8

type fetched struct {
	r   pxehttp.Request
	mac net.HardwareAddr
}

func (t *timeline) run(ctx context.Context) error {
	var writers [timelineWriters]chan fetched
	var wg sync.WaitGroup
	for i := range writers {
		writers[i] = make(chan fetched, 128)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case f := <-writers[i]:
					t.record(ctx, f.r, f.mac)
				}
			}
		}()
	}
	defer wg.Wait()
	seen := map[fetchKey]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-t.queue:
			mac := t.macOf(r)
			if mac == nil {
				continue
			}
			now := time.Now()
			k := fetchKey{mac.String(), r.Path}
			if last, ok := seen[k]; ok && now.Sub(last) < coalesceWindow {
				continue
			}
			if len(seen) >= 4096 {
				for k, at := range seen {
					if now.Sub(at) >= coalesceWindow {
						delete(seen, k)
					}
				}
			}
			seen[k] = now
			h := fnv.New32a()
			h.Write(mac)
			select {
			case writers[h.Sum32()%timelineWriters] <- fetched{r, mac}:
			default:
				t.drop(r)
			}
		}
	}
}

func (t *timeline) record(ctx context.Context, r pxehttp.Request, mac net.HardwareAddr) {
	m, err := t.store.MachineByMAC(ctx, mac.String())
	if err != nil {
		return // an unknown machine: the agent reports it once it runs
	}
	kind, ok := classify(r.Path, m.Intent)
	if !ok {
		return
	}
	_, err = t.store.AppendEvent(ctx, inventory.Event{Machine: m.Name, MAC: m.MAC, Kind: kind,
		Message: "fetched " + r.Path})
	if err != nil {
		t.log.Warn("record boot event", "machine", m.Name, "error", err)
	}
}

// macOf names the machine behind a request: scripts carry their MAC in the
// path; everything else is matched by the client's leased address.
func (t *timeline) macOf(r pxehttp.Request) net.HardwareAddr {
	if rest, ok := strings.CutPrefix(r.Path, pxehttp.ScriptPrefix); ok {
		if mac, err := net.ParseMAC(rest); err == nil {
			return mac
		}
		return nil
	}
	if mac, ok := t.leases.MACOf(r.Client); ok {
		return mac
	}
	if ip, ok := netip.AddrFromSlice(r.Client.To4()); ok {
		if mac, ok := t.policy.MACOf(ip); ok {
			return mac
		}
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
