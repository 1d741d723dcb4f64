package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/etcdtest"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// haClient is one DHCP client of TestHAServeEtcd: busybox udhcpc left
// running (it renews, rebinds and starts over as a real client does), its
// hook appending each lease it takes to a file.
type haClient struct {
	ns     *pxetest.Netns
	mac    string
	events string
}

// haLease is one lease a client took: its hook's event (bound, renew),
// the address, and the server that gave it.
type haLease struct{ event, ip, server string }

// leases are the leases the client took so far, in order.
func (c *haClient) leases() []haLease {
	b, _ := os.ReadFile(c.events)
	var ls []haLease
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			ls = append(ls, haLease{f[0], f[1], f[2]})
		}
	}
	return ls
}

// TestHAServeEtcd is HA with real processes: three `metal serve`, each in a
// namespace of its own plugged into one bridge, share a three-member etcd
// cluster (in the bridge's namespace); DHCP leases last a minute. Ten
// clients (udhcpc) get leases; then one serve is SIGKILLed, ten more
// clients start, and the raft leader of etcd is SIGKILLed while they ask.
// Every client must get a lease and, for the first ten, take one again
// (renew, rebind or start over) after the kills, whichever server gave it;
// no address is ever held by two MACs; and the store, read through the
// etcd members that are left, holds each client's lease, the one it
// holds, with no address twice.
//
// An apply of four simulated machines (applytest: Redfish BMCs on the
// bridge, agents that install for 4 s) is submitted to the serve that is
// killed, and killed with installs in flight; `metal apply --resume`
// submitted to a survivor then carries the run to its end once that
// serve leads the site (the dead one's etcd session expired). Every
// machine ends provisioned, and none was booted into the install agent,
// nor had its disk written, twice.
func TestHAServeEtcd(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	if _, err := etcdtest.Binary(); err != nil {
		t.Skip(err)
	}
	metalBin := buildMetal(t)
	lab := pxetest.NewLab(t)
	c := etcdtest.NewWith(t, 3, etcdtest.Options{Netns: lab.NS().Name, Host: pxetest.ServerIP.String()})
	state := c.StateURL("ams1")
	dir := t.TempDir()
	// The whole test's: it runs for minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	store, err := backend.Open(ctx, state, backend.Options{EtcdDial: func(ctx context.Context, addr string) (net.Conn, error) {
		return c.Dial(ctx, "tcp", addr)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	fleet := haFleet(t, lab, store)
	sitePath := filepath.Join(dir, "site.hcl")
	writeFile(t, sitePath, haSite(fleet, state))

	type server struct {
		name, ip, stateDir string
		proc               *pxetest.Process
	}
	var servers []*server
	for i := range 3 {
		s := &server{name: fmt.Sprintf("s%d", i+1), ip: fmt.Sprintf("192.0.2.%d", 11+i)}
		ns := lab.AddHost(s.name, pxetest.MAC(0x100+i))
		ns.MustIP("addr", "add", s.ip+"/24", "dev", "eth0")
		s.stateDir = filepath.Join(dir, s.name)
		// No install agent to build: the machines are simulated.
		s.proc = ns.Start(metalBin, "serve", "--site", sitePath, "--state-dir", s.stateDir,
			"--listen", s.ip+":8080", "--tftp-addr", s.ip+":69", "--api-listen", "127.0.0.1:0",
			"--agent-kernel", "/agent/vmlinuz", "--agent-initrd", "/agent/initrd.img")
		servers = append(servers, s)
	}

	var (
		clients []*haClient
		dead    *server // the server the test killed
	)
	startClient := func(i int) {
		// Above the simulated machines' MACs (02:00:00:00:00:xx) and the
		// servers' (01:xx): a client is no declared machine.
		mac := pxetest.MAC(0x300 + i + 1)
		cl := &haClient{ns: lab.AddHost(fmt.Sprintf("c%d", i+1), mac), mac: mac.String(), events: filepath.Join(dir, fmt.Sprintf("c%d.leases", i+1))}
		hook := filepath.Join(dir, fmt.Sprintf("c%d.hook", i+1))
		writeFile(t, hook, "#!/bin/sh\ncase \"$1\" in\n"+
			"deconfig) ip -4 addr flush dev \"$interface\" ;;\n"+
			"bound|renew) ip -4 addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\"\n"+
			"  echo \"$1 $ip $serverid\" >> "+cl.events+" ;;\n"+
			"esac\n")
		if err := os.Chmod(hook, 0o755); err != nil {
			t.Fatal(err)
		}
		cl.ns.Start("busybox", "udhcpc", "-i", "eth0", "-f", "-t", "5", "-T", "1", "-A", "1", "-s", hook)
		clients = append(clients, cl)
	}
	logs := func() string {
		var b strings.Builder
		for _, s := range servers {
			fmt.Fprintf(&b, "--- metal serve %s (%s):\n%s\n", s.name, s.ip, tailString(s.proc.Log(), 3000))
		}
		return b.String()
	}
	// waitAll waits (a bounded time, not a speed) until every client
	// passes ok.
	waitAll := func(what string, d time.Duration, ok func(*haClient) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			var missing []string
			for _, cl := range clients {
				if !ok(cl) {
					missing = append(missing, cl.mac)
				}
			}
			if len(missing) == 0 {
				return time.Since(start)
			}
			if time.Since(start) > d {
				t.Fatalf("%s: not within %v for %v\n%s", what, d, missing, logs())
			}
			for _, s := range servers {
				if s == dead {
					continue
				}
				select {
				case <-s.proc.Done():
					t.Fatalf("metal serve %s exited: %v\n%s", s.name, s.proc.Err(), logs())
				default:
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	hasLease := func(cl *haClient) bool { return len(cl.leases()) > 0 }

	for i := range 10 {
		startClient(i)
	}
	took := waitAll("the first ten clients' leases", 3*time.Minute, hasLease)
	t.Logf("ten clients bound in %v", took.Round(time.Millisecond))
	before := map[string]int{}
	gave := map[string]int{}
	for _, cl := range clients {
		ls := cl.leases()
		before[cl.mac] = len(ls)
		gave[ls[len(ls)-1].server]++
	}
	// The server that gave the most of the leases dies: its clients
	// must find another (they unicast their renewal to it, then
	// broadcast).
	slices.SortStableFunc(servers, func(a, b *server) int { return gave[b.ip] - gave[a.ip] })
	dead = servers[0]
	t.Logf("leases given by server: %v; killing %s", gave, dead.name)

	// The apply goes to the server about to die, which dies with
	// installs in flight.
	submitted := haApply(ctx, lab, metalBin, dead.stateDir, sitePath)
	for len(fleet.Started()) == 0 {
		select {
		case <-submitted.done:
			t.Fatalf("the apply ended before an install started: %v\n%s\n%s", submitted.err, submitted.out.String(), logs())
		case <-time.After(100 * time.Millisecond):
		}
	}

	// One server dies, ten more clients ask, and etcd's raft leader dies
	// while they do.
	if err := syscall.Kill(dead.proc.Pid(), syscall.SIGKILL); err != nil { // the test's own metal serve
		t.Fatal(err)
	}
	killed := time.Now()
	runTakeover := watchTakeover(ctx, store, killed)
	<-dead.proc.Done()
	// What the clients held when the server died: the apply above took
	// seconds, in which a client may have renewed with it (at 30 s).
	for _, cl := range clients {
		if _, was := before[cl.mac]; was {
			before[cl.mac] = len(cl.leases())
		}
	}
	inFlight := fleet.Started()
	<-submitted.done
	if submitted.err == nil {
		t.Fatalf("metal apply succeeded though the serve running it was killed:\n%s", submitted.out.String())
	}
	t.Logf("killed the serve leading the apply with installs in flight on %v; metal apply: %v", inFlight, submitted.err)
	for i := 10; i < 20; i++ {
		startClient(i)
	}
	leader, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(leader, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed metal serve %s and etcd member %s (the raft leader)", dead.name, c.Name(leader))

	// Every client holds a lease; the first ten took one again after the
	// kills: within two lease times, whatever the server that gave theirs.
	var takeover time.Duration // until the last of the dead server's clients took a lease elsewhere
	waitAll("leases after the kills", 3*time.Minute, func(cl *haClient) bool {
		ls := cl.leases()
		n, was := before[cl.mac]
		if !was {
			return len(ls) > 0
		}
		if len(ls) <= n {
			return false
		}
		if ls[n-1].server == dead.ip {
			takeover = max(takeover, time.Since(killed))
		}
		return true
	})
	// The clients ask again when their lease says (renewal at 30 s): the
	// times are the clients' schedule more than the servers' takeover.
	t.Logf("every client took a lease after the kills, within %v of them (lease time 1m); "+
		"the dead server's clients, from another server, within %v (to the 200 ms of polling)", time.Since(killed).Round(time.Millisecond), takeover.Round(time.Millisecond))

	// No address was ever held by two MACs, and no lease came from the
	// dead server after its death.
	holders := map[string]map[string]bool{}
	last := map[string]string{}
	for _, cl := range clients {
		ls := cl.leases()
		for i, l := range ls {
			if holders[l.ip] == nil {
				holders[l.ip] = map[string]bool{}
			}
			holders[l.ip][cl.mac] = true
			last[cl.mac] = l.ip
			if n, was := before[cl.mac]; (!was || i >= n) && l.server == dead.ip {
				t.Errorf("client %s took a lease from the dead server %s: %+v", cl.mac, dead.ip, l)
			}
		}
	}
	for ip, macs := range holders {
		if len(macs) > 1 {
			t.Errorf("address %s was given to %d MACs: %v", ip, len(macs), macs)
		}
	}

	// The store, through the members left: each client's lease is the one
	// it holds, and no address is in it twice.
	leases, _, err := store.Leases(ctx)
	if err != nil {
		t.Fatalf("the store's leases: %v", err)
	}
	byIP := map[string]string{}
	stored := map[string]string{}
	for _, l := range leases {
		if other, dup := byIP[l.IP.String()]; dup {
			t.Errorf("the store holds %s for %s and %s", l.IP, other, l.MAC)
		}
		byIP[l.IP.String()] = l.MAC
		stored[l.MAC] = l.IP.String()
	}
	for _, cl := range clients {
		if stored[cl.mac] != last[cl.mac] {
			t.Errorf("client %s holds %s, the store says %q", cl.mac, last[cl.mac], stored[cl.mac])
		}
	}
	ips := make([]string, 0, len(byIP))
	for ip := range byIP {
		ips = append(ips, ip)
	}
	slices.Sort(ips)
	t.Logf("the store holds %d leases: %v", len(leases), ips)

	// Nobody resumes the apply: a surviving serve sees it orphaned once
	// the dead one's etcd session expired, and carries it to its end.
	h := <-runTakeover
	if h.err != nil {
		t.Fatalf("%v\n%s", h.err, logs())
	}
	t.Logf("apply run taken over from %s (%s) by %s %v after the kill (etcd session TTL 10 s); it finished %v after the kill",
		dead.name, h.from, h.owner, h.taken.Round(100*time.Millisecond), time.Since(killed).Round(100*time.Millisecond))
	said := false
	for _, s := range servers[1:] {
		if strings.Contains(s.proc.Log(), "taken over by serve "+h.owner) {
			said = true
		}
	}
	if !said {
		t.Errorf("no surviving serve logged taking the run over as %q\n%s", h.owner, logs())
	}
	checkFleetOnce(t, fleet, store)

	// The installs the dead serve wrote phoned home all the same: first
	// to it (refused), then to a survivor it named beside itself.
	answered, urls := fleet.PhoneHomes()
	fellBack := 0
	for name, u := range urls {
		if !strings.HasPrefix(u[0], "http://"+dead.ip+":") {
			continue
		}
		if len(u) < 2 || answered[name] == "" || strings.HasPrefix(answered[name], "http://"+dead.ip+":") {
			t.Errorf("%s, installed by the dead serve: phone-home URLs %v, answered by %q", name, u, answered[name])
			continue
		}
		fellBack++
		t.Logf("%s, installed by the dead serve, phoned home to %s", name, answered[name])
	}
	if fellBack == 0 {
		t.Errorf("no machine installed by the dead serve phoned home: %v", urls)
	}
}

// haTakeover is how an orphaned apply run ended: the owner it ended
// with, how long after the kill it first had that owner, or an error.
type haTakeover struct {
	from, owner string
	taken       time.Duration
	err         error
}

// watchTakeover follows the newest apply run in store from the kill until
// it is done (a bounded time), in the background: it must be taken over
// from the owner it had at the kill, and finish.
func watchTakeover(ctx context.Context, store inventory.Store, killed time.Time) <-chan haTakeover {
	out := make(chan haTakeover, 1)
	go func() {
		var h haTakeover
		defer func() { out <- h }()
		for {
			runs, err := store.ApplyRuns(ctx)
			if err != nil {
				h.err = fmt.Errorf("the store's apply runs: %w", err)
				return
			}
			if len(runs) > 0 {
				r := runs[len(runs)-1]
				if h.from == "" {
					h.from, h.owner = r.Owner, r.Owner
				}
				if r.Owner != h.owner {
					h.owner, h.taken = r.Owner, time.Since(killed)
				}
				switch {
				case r.State == inventory.RunDone && h.owner == h.from:
					h.err = fmt.Errorf("apply run %s done but never taken over from %s", r.ID, h.from)
					return
				case r.State == inventory.RunDone:
					return
				case r.State != inventory.RunRunning:
					h.err = fmt.Errorf("apply run %s is %s (owner %s), want it taken over and done", r.ID, r.State, r.Owner)
					return
				}
			}
			if time.Since(killed) > 4*time.Minute {
				h.err = fmt.Errorf("the apply run was not done within 4m of the kill (owner %q)", h.owner)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	return out
}

// haFleet is TestHAServeEtcd's simulated rack: its BMCs listen on the
// lab's bridge, where the serves in their namespaces reach them; its
// agents report to the store directly (as a serve's agent API would).
func haFleet(t *testing.T, lab *pxetest.Lab, store inventory.Store) *applytest.Fleet {
	t.Helper()
	f, err := applytest.Start(applytest.Options{Machines: 4, Store: store, AgentTime: 4 * time.Second,
		Listen: func() (ln net.Listener, err error) {
			err = netns.Do(lab.NS().Name, func() error {
				ln, err = net.Listen("tcp", net.JoinHostPort(pxetest.ServerIP.String(), "0"))
				return err
			})
			return ln, err
		},
		// The installed OS phones home from the bridge, where the
		// serves are.
		Dial: netns.Dialer(lab.NS().Name)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// haSite is the fleet's site with its machines on a network of their own
// (no DHCP: the simulated machines need none) and the lab's bridge served
// by DHCP with one-minute leases. The image is checked by cloud-init's
// phone-home (the default).
func haSite(f *applytest.Fleet, state string) string {
	site := strings.Replace(string(f.SiteHCL(state, "  batch_size = 2\n  stagger = \"0s\"")),
		`subnet = "192.0.2.0/24"`, `subnet = "198.51.100.0/24"`, 1)
	return site + `
network "lab" {
  interface  = "eth0"
  subnet     = "192.0.2.0/24"
  gateway    = "192.0.2.1"
  pool       = "192.0.2.100-192.0.2.150"
  lease_time = "1m"
}
`
}

// haRun is one `metal apply` process and how it ended.
type haRun struct {
	out  syncbuf.Buffer
	err  error
	done chan struct{}
}

// haApply submits an apply to the metal serve
// whose state directory is stateDir; it runs in the lab's namespace,
// where the etcd members are.
func haApply(ctx context.Context, lab *pxetest.Lab, bin, stateDir, sitePath string) *haRun {
	r := &haRun{done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	cmd := lab.NS().Command(ctx, bin, "apply", "--auto-approve", "--json", "--state-dir", stateDir,
		"--step-timeout", "10s", "--agent-timeout", "60s", sitePath)
	cmd.Stdout, cmd.Stderr = &r.out, &r.out
	go func() {
		defer close(r.done)
		defer cancel()
		r.err = cmd.Run()
	}()
	return r
}

// checkFleetOnce asserts that every machine of f was booted into the
// install agent and installed exactly once, and ends provisioned in store
// with the last apply run done.
func checkFleetOnce(t *testing.T, f *applytest.Fleet, store inventory.Store) {
	t.Helper()
	want, counts := fleetCounts(f)
	for what, got := range counts {
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s per machine (-want +got):\n%s", what, diff)
		}
	}
	ctx := testCtx(t)
	ms, _, err := store.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != len(want) {
		t.Errorf("%d machines in the store, want %d", len(ms), len(want))
	}
	for _, m := range ms {
		if m.State != inventory.StateProvisioned || m.Agent == nil || m.Agent.Phase != inventory.AgentDone {
			t.Errorf("%s: %s, agent %+v; want provisioned", m.Name, m.State, m.Agent)
		}
	}
	runs, err := store.ApplyRuns(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) == 0 || runs[len(runs)-1].State != inventory.RunDone {
		t.Errorf("the last apply run is not done: %+v", runs)
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
