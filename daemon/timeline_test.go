package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/bolt"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/storepolicy"
)

// TestTimelineRecordsEachBootStepOnce feeds the timeline answered requests
// as the HTTP server reports them and reads the machines' events back
// from a bbolt store: each step once per machine, repeats within the
// coalescing window left out, failures and strangers not at all.
func TestTimelineRecordsEachBootStepOnce(t *testing.T) {
	const (
		macA = "52:54:00:00:0a:01"
		macB = "52:54:00:00:0a:02"
	)
	type step struct {
		path   string
		client string
		status int
	}
	type event struct {
		Machine string
		Kind    inventory.EventKind
		Message string
	}
	tests := map[string]struct {
		steps []step
		want  []event
	}{
		"a boot over IPv6": {
			steps: []step{
				{"/files/vmlinuz", "2001:db8::11", 200},
			},
			want: []event{{"a", inventory.EventKernel, "fetched /files/vmlinuz"}},
		},
		"a boot": {
			steps: []step{
				{"/ipxe/" + macA, "198.51.100.7", 200},
				{"/files/vmlinuz", "192.0.2.11", 200},
				{"/files/initrd", "192.0.2.11", 200},
			},
			want: []event{
				{"a", inventory.EventScript, "fetched /ipxe/" + macA},
				{"a", inventory.EventKernel, "fetched /files/vmlinuz"},
				{"a", inventory.EventInitrd, "fetched /files/initrd"},
			},
		},
		"repeats within the window": {
			steps: []step{
				{"/ipxe/" + macA, "192.0.2.11", 200},
				{"/ipxe/" + macA, "192.0.2.11", 200},
				{"/ipxe/" + macB, "192.0.2.12", 200},
				{"/ipxe/" + macA, "192.0.2.11", 200},
				{"/files/vmlinuz", "192.0.2.12", 206},
				{"/files/vmlinuz", "192.0.2.12", 206},
			},
			want: []event{
				{"a", inventory.EventScript, "fetched /ipxe/" + macA},
				{"b", inventory.EventScript, "fetched /ipxe/" + macB},
				{"b", inventory.EventKernel, "fetched /files/vmlinuz"},
			},
		},
		"DHCP from declared machines, repeats and strangers left out": {
			steps: []step{
				{dhcpPath, macA, 0},
				{dhcpPath, macA, 0},
				{dhcpPath, "52:54:00:00:0a:99", 0},
				{"/ipxe/" + macA, "192.0.2.11", 200},
			},
			want: []event{
				{"a", inventory.EventDHCPDiscover, "DHCP from " + macA},
				{"a", inventory.EventScript, "fetched /ipxe/" + macA},
			},
		},
		"failures and strangers": {
			steps: []step{
				{"/ipxe/" + macA, "192.0.2.11", 403},
				{"/ipxe/52:54:00:00:0a:99", "192.0.2.11", 200},
				{"/ipxe/not-a-mac", "192.0.2.11", 200},
				{"/files/vmlinuz", "203.0.113.5", 200},
				{"/files/unrelated", "192.0.2.11", 200},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, store := openFileStore(t)
			intent := inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/files/vmlinuz", Initrds: []string{"/files/initrd"}}
			for _, m := range []inventory.Machine{
				{Name: "a", MAC: macA, State: inventory.StateProvisioning, Intent: intent,
					Identity: inventory.Identity{IP: netip.MustParseAddr("192.0.2.11")}},
				{Name: "b", MAC: macB, State: inventory.StateProvisioning, Intent: intent,
					Identity: inventory.Identity{IP: netip.MustParseAddr("192.0.2.12")}},
			} {
				if _, err := store.PutMachine(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			policy, err := storepolicy.New(ctx, store, storepolicy.Options{})
			if err != nil {
				t.Fatal(err)
			}
			// A DHCPv6 lease: a's IPv6 address (IPv4 ones are in its identity).
			v6 := fixedLeases{macA: net.ParseIP("2001:db8::11")}
			tl := newTimeline(store, policy, multiLeases{v6}, slog.New(slog.DiscardHandler))
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- tl.run(runCtx) }()
			contacts := dhcpContacts{Policy: policy, timeline: func() *timeline { return tl }}
			for _, s := range tc.steps {
				if s.path == dhcpPath {
					mac, _ := net.ParseMAC(s.client)
					_, _ = contacts.Host(ctx, mac)
					continue
				}
				tl.observe(pxehttp.Request{Method: "GET", Path: s.path, Client: netip.MustParseAddr(s.client), MAC: scriptMAC(s.path), Status: s.status})
			}
			// Wait for the events wanted, then a while longer for any
			// that should not come.
			var got []event
			read := func() {
				evs, err := store.Events(ctx, inventory.EventQuery{})
				if err != nil {
					t.Fatal(err)
				}
				got = nil
				for _, e := range evs {
					got = append(got, event{e.Machine, e.Kind, e.Message})
				}
				// Each machine's events are in order; machines' among
				// themselves are not.
				slices.SortStableFunc(got, func(a, b event) int { return strings.Compare(a.Machine, b.Machine) })
			}
			for deadline := time.Now().Add(5 * time.Second); len(got) < len(tc.want) && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				read()
			}
			time.Sleep(5 * flushDelay)
			read()
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			stop()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
}

// TestTimelineCoalescesAFleet: with more machines fetching within the
// window than the coalescing map is first pruned at, every repeat is still
// left out, every fetch after the window is recorded, and the map stays
// bounded by what is fresh: for scripts (kept apart by MAC), for other
// files, and for scripts of MACs too long to be kept apart so.
func TestTimelineCoalescesAFleet(t *testing.T) {
	const machines = 3 * minPruneAt
	ethernet := func(i int) net.HardwareAddr {
		return net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
	}
	infiniband := func(i int) net.HardwareAddr {
		mac := make(net.HardwareAddr, 20)
		copy(mac[17:], []byte{byte(i >> 16), byte(i >> 8), byte(i)})
		return mac
	}
	tests := map[string]struct {
		path string
		mac  func(int) net.HardwareAddr
	}{
		"scripts":            {path: "/ipxe/x", mac: ethernet},
		"kernels":            {path: "/files/k", mac: ethernet},
		"InfiniBand scripts": {path: "/ipxe/x", mac: infiniband},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tl := newTimeline(nil, nil, nil, slog.New(slog.DiscardHandler))
			t0 := time.Now()
			count := func(at time.Duration) (first int) {
				for i := range machines {
					if tl.first(tc.mac(i), tc.path, t0.Add(at)) {
						first++
					}
				}
				return first
			}
			got := []int{count(0), count(time.Second), count(coalesceWindow + time.Second), count(coalesceWindow + 2*time.Second)}
			if diff := cmp.Diff([]int{machines, 0, machines, 0}, got); diff != "" {
				t.Errorf("fetches recorded at 0, 1s, window+1s, window+2s (-want +got):\n%s", diff)
			}
			if n := len(tl.seen) + len(tl.scripts); n > 2*machines {
				t.Errorf("coalescing maps hold %d entries for %d machines", n, machines)
			}
		})
	}
}

// TestTimelineScriptIsItsMAC: a machine's script fetches are one step
// however the path spells the MAC; another machine's, or another path of
// the same machine, are not its repeats.
func TestTimelineScriptIsItsMAC(t *testing.T) {
	tl := newTimeline(nil, nil, nil, slog.New(slog.DiscardHandler))
	a := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	b := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	t0 := time.Now()
	steps := []struct {
		mac  net.HardwareAddr
		path string
		want bool
	}{
		{a, "/ipxe/52:54:00:00:00:01", true},
		{a, "/ipxe/52-54-00-00-00-01", false},
		{b, "/ipxe/52:54:00:00:00:02", true},
		{a, "/files/k", true},
		{a, "/files/k", false},
		{a[:5], "/ipxe/52:54:00:00:00", true}, // a shorter MAC is another
	}
	for i, s := range steps {
		if got := tl.first(s.mac, s.path, t0); got != s.want {
			t.Errorf("step %d: first(%v, %s) = %v, want %v", i, s.mac, s.path, got, s.want)
		}
	}
}

// scriptMAC is the MAC a script request's path names, as the HTTP server
// parses it into pxehttp.Request.MAC; nil for any other path.
func scriptMAC(path string) net.HardwareAddr {
	rest, ok := strings.CutPrefix(path, pxehttp.ScriptPrefix)
	if !ok {
		return nil
	}
	mac, _ := net.ParseMAC(rest)
	return mac
}

// fixedLeases is a lease table of MAC to address.
type fixedLeases map[string]net.IP

func (l fixedLeases) LeasedIP(mac net.HardwareAddr) (net.IP, bool) {
	ip, ok := l[mac.String()]
	return ip, ok
}

func (l fixedLeases) MACOf(ip net.IP) (net.HardwareAddr, bool) {
	for m, have := range l {
		if have.Equal(ip) {
			mac, err := net.ParseMAC(m)
			return mac, err == nil
		}
	}
	return nil, false
}

// BenchmarkTimelineObserve is the boot timeline's share of a script
// request under a flood of them: 200 machines fetching their scripts in
// turn, every fetch after the first a repeat left out.
func BenchmarkTimelineObserve(b *testing.B) {
	tl := newTimeline(nil, nil, nil, slog.New(slog.DiscardHandler))
	reqs := make([]pxehttp.Request, 200)
	for i := range reqs {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0xbb, 0, byte(i)}
		reqs[i] = pxehttp.Request{Method: "GET", Path: pxehttp.ScriptPrefix + mac.String(), MAC: mac, Status: 200}
	}
	for _, r := range reqs {
		tl.observe(r)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tl.observe(reqs[i%len(reqs)])
		i++
	}
}

// countingKV counts the Txns a store makes of a real bbolt KV.
type countingKV struct {
	*bolt.KV
	txns atomic.Int64
}

func (k *countingKV) Txn(ctx context.Context, t inventory.Txn) (int64, bool, error) {
	k.txns.Add(1)
	return k.KV.Txn(ctx, t)
}

// TestTimelineWritesABatchInFewTxns: a batch of a rack's boot steps, each
// machine's several times over, is stored whole, each machine's steps in
// the order they came, in as few Txns as the store's batches take (256
// events each on bbolt), not a Txn per step of each machine.
func TestTimelineWritesABatchInFewTxns(t *testing.T) {
	const machines = 200
	mac, ip := rackMAC, rackIP
	steps := map[string]struct {
		path string
		kind inventory.EventKind
	}{
		"script": {"/ipxe/", inventory.EventScript},
		"kernel": {"/files/vmlinuz", inventory.EventKernel},
		"initrd": {"/files/initrd", inventory.EventInitrd},
		"other":  {"/files/unrelated", ""},
	}
	tests := map[string]struct {
		machines int
		steps    []string
		maxTxns  int64
	}{
		"a rack's boot":      {machines: machines, steps: []string{"script", "kernel", "initrd"}, maxTxns: (machines*3 + 255) / 256},
		"one machine":        {machines: 1, steps: []string{"script", "kernel", "initrd"}, maxTxns: 1},
		"one step":           {machines: 1, steps: []string{"kernel"}, maxTxns: 1},
		"nothing to record":  {machines: machines, steps: []string{"other"}, maxTxns: 0},
		"a rack's last step": {machines: machines, steps: []string{"initrd", "other"}, maxTxns: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			kv, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			counted := &countingKV{KV: kv}
			store, err := inventory.Open(ctx, counted, inventory.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			tl := newTimeline(store, putRack(t, ctx, store, tc.machines), nil, slog.New(slog.DiscardHandler))
			// Step after step, the machines interleaved, as a rack's
			// requests come.
			var batch []fetched
			want := map[string][]inventory.EventKind{}
			for _, s := range tc.steps {
				for i := range tc.machines {
					r := pxehttp.Request{Method: "GET", Path: steps[s].path, Client: ip(i), Status: 200}
					if steps[s].kind == inventory.EventScript {
						r.Path += mac(i).String()
						r.MAC = mac(i)
					}
					batch = append(batch, fetched{r, mac(i)})
					if k := steps[s].kind; k != "" {
						name := fmt.Sprintf("m%03d", i)
						want[name] = append(want[name], k)
					}
				}
			}
			before := counted.txns.Load()
			tl.write(ctx, batch)
			if txns := counted.txns.Load() - before; txns > tc.maxTxns {
				t.Errorf("%d Txns for the batch, want at most %d", txns, tc.maxTxns)
			}
			evs, err := store.Events(ctx, inventory.EventQuery{})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]inventory.EventKind{}
			for _, e := range evs {
				got[e.Machine] = append(got[e.Machine], e.Kind)
			}
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("each machine's events (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTimelineWritesWhatItSawBeforeAStop: a server stopped while a rack
// boots still records every step it saw before the stop, whether the step
// was being written, gathered for the next batch or still queued.
func TestTimelineWritesWhatItSawBeforeAStop(t *testing.T) {
	const machines = 200
	// waitKernels: the kernels' batch is written (and the writer waits
	// out floodDelay) before the initrds come; else all come at once.
	for name, waitKernels := range map[string]bool{"all at once": false, "while the writer waits": true} {
		t.Run(name, func(t *testing.T) {
			ctx, store := openFileStore(t)
			tl := newTimeline(store, putRack(t, ctx, store, machines), nil, slog.New(slog.DiscardHandler))
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- tl.run(runCtx) }()
			count := func() map[inventory.EventKind]int {
				evs, err := store.Events(ctx, inventory.EventQuery{})
				if err != nil {
					t.Fatal(err)
				}
				got := map[inventory.EventKind]int{}
				for _, e := range evs {
					got[e.Kind]++
				}
				return got
			}
			for _, path := range []string{"/files/vmlinuz", "/files/initrd"} {
				for i := range machines {
					tl.observe(pxehttp.Request{Method: "GET", Path: path, Client: rackIP(i), Status: 200})
				}
				for deadline := time.Now().Add(10 * time.Second); waitKernels && path == "/files/vmlinuz" && count()[inventory.EventKernel] < machines; {
					if time.Now().After(deadline) {
						t.Fatalf("kernels recorded before the stop: %v", count())
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			stop()
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
			want := map[inventory.EventKind]int{inventory.EventKernel: machines, inventory.EventInitrd: machines}
			if diff := cmp.Diff(want, count()); diff != "" {
				t.Errorf("events recorded by kind (-want +got):\n%s", diff)
			}
		})
	}
}

// rackMAC and rackIP are the i-th machine of a rack being installed
// (putRack).
func rackMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
}
func rackIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}) }

// putRack declares n machines in store, m000 up, each being installed
// (kernel /files/vmlinuz, initrd /files/initrd), and returns the boot
// policy over the store.
func putRack(t *testing.T, ctx context.Context, store inventory.Store, n int) *storepolicy.Policy {
	t.Helper()
	intent := inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/files/vmlinuz", Initrds: []string{"/files/initrd"}}
	for i := range n {
		m := inventory.Machine{Name: fmt.Sprintf("m%03d", i), MAC: rackMAC(i).String(), State: inventory.StateProvisioning,
			Intent: intent, Identity: inventory.Identity{IP: rackIP(i)}}
		if _, err := store.PutMachine(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	policy, err := storepolicy.New(ctx, store, storepolicy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return policy
}

// openFileStore opens a bbolt state store of its own for t, and a context
// that ends with t.
func openFileStore(t *testing.T) (context.Context, inventory.Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	store, err := backend.Open(ctx, "file://"+filepath.Join(t.TempDir(), "state.db"), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return ctx, store
}
