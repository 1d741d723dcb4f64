package backup_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
)

// rig is an sshd in a network namespace of the test's own. The primary
// connects from 127.0.0.2 and the standby from 127.0.0.1, so nftables can
// black-hole the primary's path alone.
type rig struct {
	ns string
	d  *sshd
}

var rigs atomic.Int32

func newRig(t *testing.T) *rig {
	t.Helper()
	testenv.Root(t, "network namespaces")
	ns := fmt.Sprintf("metal-bk-%d-%d", os.Getpid(), rigs.Add(1))
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	s := sshdtest.StartWith(t, sshdtest.Options{Netns: ns, Dial: netns.Dialer(ns)})
	return &rig{ns: ns, d: &sshd{Server: s, hostPub: s.HostKey}}
}

// remote dials the rig's sshd from src; its operations time out after op.
func (g *rig) remote(t *testing.T, src string, op time.Duration) *backup.Remote {
	t.Helper()
	opts := g.d.opts()
	opts.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := netns.Do(g.ns, func() error {
			var err error
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	r, err := backup.Dial(ctxT(t), g.d.target(), opts)
	if err != nil {
		t.Fatal(err)
	}
	r.OpTimeout = op
	t.Cleanup(func() { r.Close() })
	return r
}

// blackhole drops every packet from and to src: the link is cut, not
// closed (no RST, no ICMP).
func (g *rig) blackhole(t *testing.T, src string) {
	t.Helper()
	rules := fmt.Sprintf(`table inet metal_cut {
  chain out {
    type filter hook output priority 0; policy accept;
    ip saddr %[1]s drop
    ip daddr %[1]s drop
  }
}
`, src)
	cmd := exec.Command("ip", "netns", "exec", g.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

const (
	primaryAddr = "127.0.0.2"
	standbyAddr = "127.0.0.1"
)

// failover is one run: a primary with lease L beats; cut breaks its path;
// a standby promotes as soon as Promote lets it. It returns when the
// primary stopped (its lease ended: metal serve stops DHCP then) and when
// promote succeeded, both after the cut.
type failover struct {
	lease, interval, op, margin time.Duration
	// skew is the primary's clock minus the standby's.
	skew time.Duration
}

type failoverTimes struct {
	cut, stopped, promoted time.Time
	stopErr                error
	promotion              backup.Promotion
}

func (f failover) run(t *testing.T, g *rig, cut func(), afterStop func()) failoverTimes {
	t.Helper()
	ctx := ctxT(t)
	pr := g.remote(t, primaryAddr, f.op)
	sr := g.remote(t, standbyAddr, f.op)
	p := &backup.Primary{Remote: pr, Site: "ams1", Owner: "ams1-a", Interval: f.interval, Lease: f.lease,
		Now: func() time.Time { return time.Now().Add(f.skew) }}
	if err := p.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	var res failoverTimes
	stopped := make(chan struct{})
	go func() {
		res.stopErr = p.Run(ctx)
		res.stopped = time.Now()
		close(stopped)
	}()
	// The primary serves while its path is whole, and promote is refused.
	time.Sleep(f.interval * 2)
	select {
	case <-stopped:
		t.Fatalf("primary stopped before the cut: %v", res.stopErr)
	default:
	}
	if _, err := backup.Promote(ctx, sr, backup.PromoteOptions{Site: "ams1", Owner: "ams1-b", Margin: f.margin}); !errors.Is(err, backup.ErrPrimaryAlive) {
		t.Fatalf("promote beside a live primary: %v, want ErrPrimaryAlive", err)
	}
	res.cut = time.Now()
	cut()
	go func() {
		<-stopped
		if afterStop != nil {
			afterStop()
		}
	}()
	lastErr := ""
	for {
		p, err := backup.Promote(ctx, sr, backup.PromoteOptions{Site: "ams1", Owner: "ams1-b", Margin: f.margin})
		if err == nil {
			res.promoted, res.promotion = time.Now(), p
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("promote never succeeded: %v", err)
		}
		e := err.Error()
		if errors.As(err, new(*backup.PrimaryAliveError)) {
			e = "alive"
		}
		if e != lastErr {
			t.Logf("%v after the cut: promote: %v", time.Since(res.cut).Round(time.Millisecond), err)
			lastErr = e
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("the primary never stopped")
	}
	return res
}

func (res failoverTimes) check(t *testing.T, f failover) {
	t.Helper()
	if !errors.Is(res.stopErr, backup.ErrLeaseExpired) || !errors.Is(res.stopErr, backup.ErrFenced) {
		t.Errorf("primary stopped with %v, want ErrLeaseExpired (and ErrFenced)", res.stopErr)
	}
	overlap := res.stopped.Sub(res.promoted)
	t.Logf("L %v, margin %v, skew %v: primary stopped serving %v after the cut, promote succeeded %v after the cut; overlap %v",
		f.lease, f.margin, f.skew, res.stopped.Sub(res.cut).Round(time.Millisecond), res.promoted.Sub(res.cut).Round(time.Millisecond), overlap.Round(time.Millisecond))
	if overlap > 0 {
		t.Errorf("overlap %v: the old primary served after the promote succeeded", overlap)
	}
	// The primary's last confirmed beat started before the cut: its lease
	// ends at most L after the cut.
	if d := res.stopped.Sub(res.cut); d > f.lease+f.lease/2 {
		t.Errorf("primary stopped %v after the cut, want about L (%v) at most", d, f.lease)
	}
}

// The primary's path to the SFTP server is black-holed: its calls hang
// until their deadline, the lease timer stops it anyway, and promote
// succeeds only after that.
func TestFailoverBlackhole(t *testing.T) {
	g := newRig(t)
	f := failover{lease: 3 * time.Second, interval: 500 * time.Millisecond, op: time.Second, margin: time.Second}
	res := f.run(t, g, func() { g.blackhole(t, primaryAddr) }, nil)
	res.check(t, f)
}

// The SFTP server is killed: nobody can beat or promote until it is back;
// it comes back once the primary stopped.
func TestFailoverServerKilled(t *testing.T) {
	g := newRig(t)
	f := failover{lease: 3 * time.Second, interval: 500 * time.Millisecond, op: time.Second, margin: time.Second}
	res := f.run(t, g, g.d.Kill, g.d.Restart)
	res.check(t, f)
}

// Clock skew of 30 s either way, with a margin M of 31 s: a primary whose
// clock is behind makes its heartbeats look older to the standby, which
// the margin absorbs (overlap still <= 0); one ahead makes the standby
// wait 30 s longer (promote says so: not waited for here).
func TestFailoverClockSkew(t *testing.T) {
	g := newRig(t)
	t.Run("primary-30s", func(t *testing.T) {
		f := failover{lease: 3 * time.Second, interval: 500 * time.Millisecond, op: time.Second, margin: 31 * time.Second, skew: -30 * time.Second}
		res := f.run(t, g, func() { g.blackhole(t, primaryAddr) }, nil)
		res.check(t, f)
	})
	t.Run("primary+30s", func(t *testing.T) {
		g := newRig(t)
		ctx := ctxT(t)
		const skew, margin, lease = 30 * time.Second, 31 * time.Second, 3 * time.Second
		p := &backup.Primary{Remote: g.remote(t, primaryAddr, time.Second), Site: "ams1", Owner: "ams1-a", Interval: time.Second, Lease: lease,
			Now: func() time.Time { return time.Now().Add(skew) }}
		if err := p.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		beat := time.Now()
		_, err := backup.Promote(ctx, g.remote(t, standbyAddr, time.Second), backup.PromoteOptions{Site: "ams1", Owner: "ams1-b", Margin: margin})
		var alive *backup.PrimaryAliveError
		if !errors.As(err, &alive) {
			t.Fatalf("promote: %v, want PrimaryAliveError", err)
		}
		// Promote is possible at beat + skew + L + M on the standby's clock.
		want := skew + lease + margin - time.Since(beat)
		if alive.Wait < want-time.Second || alive.Wait > skew+lease+margin {
			t.Errorf("promote waits %v, want about %v (skew + L + M)", alive.Wait, want)
		}
		t.Logf("%v", err)
	})
}

// Concurrent promotes: exactly one claims the site, the others are told
// who did; the old primary is fenced.
func TestConcurrentPromote(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	old := &backup.Primary{Remote: dial(t, d), Site: "ams1", Owner: "ams1-a", Interval: time.Minute}
	if err := old.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 3; round++ {
		const n = 6
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			r := dial(t, d)
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Each round an hour later: the last winner is long silent.
				later := func() time.Time { return time.Now().Add(time.Duration(round) * time.Hour) }
				_, errs[i] = backup.Promote(ctx, r, backup.PromoteOptions{Site: "ams1", Owner: fmt.Sprintf("r%d-standby-%d", round, i), Now: later})
			}()
		}
		wg.Wait()
		won, lost := 0, 0
		var winner string
		for i, err := range errs {
			switch {
			case err == nil:
				won++
				winner = fmt.Sprintf("r%d-standby-%d", round, i)
			case errors.Is(err, backup.ErrPromotedElsewhere):
				lost++
			default:
				t.Errorf("round %d, promote %d: %v", round, i, err)
			}
		}
		t.Logf("round %d: %v", round, errs)
		if won != 1 || lost != n-1 {
			t.Fatalf("round %d: %d won, %d lost, want 1 and %d", round, won, lost, n-1)
		}
		for _, err := range errs {
			if err != nil && !strings.Contains(err.Error(), winner) {
				t.Errorf("round %d: the loser's error does not name the winner %s: %v", round, winner, err)
			}
		}
		f, ok, err := backup.CurrentFence(ctx, dial(t, d), "ams1")
		if err != nil || !ok || f.Owner != winner || f.Epoch != round {
			t.Errorf("round %d: fence in force %+v %v %v, want %s at epoch %d", round, f, ok, err, winner, round)
		}
	}
	if err := old.Beat(ctx); !errors.Is(err, backup.ErrFenced) {
		t.Errorf("old primary: %v, want ErrFenced", err)
	}
}

// TestRunBeatsAtOnce: metal serve confirms a first beat when it opens the
// backup directory (Primary.Open), then may take most of a lease before it
// starts Run (it builds the agent's initramfs in between). Run beats at
// once, so the lease that first beat began does not run out under it.
func TestRunBeatsAtOnce(t *testing.T) {
	t.Parallel()
	d := startSSHD(t)
	const interval = time.Second
	p := &backup.Primary{Remote: dial(t, d), Site: "ams1", Owner: "ams1-a", Interval: interval, Lease: 3 * interval}
	if err := p.Beat(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// Wait until less than one interval of the lease is left: a Run
	// whose first beat waited an Interval would see the lease end.
	time.Sleep(time.Until(p.Until()) - interval/2)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	// Run for a whole lease past the first one's end.
	select {
	case err := <-done:
		t.Fatalf("Run ended: %v", err)
	case <-time.After(p.LeaseLength() + interval):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

// TestServeStopsAtLeaseEnd: a primary whose store keeps changing uploads a
// snapshot every interval; its path is black-holed, so an upload hangs
// until its deadline (30 s). Serve must still return when the lease ends,
// not when that upload gives up: metal serve stops serving then.
func TestServeStopsAtLeaseEnd(t *testing.T) {
	g := newRig(t)
	ctx := ctxT(t)
	const lease, interval = 3 * time.Second, 500 * time.Millisecond
	p := &backup.Primary{Remote: g.remote(t, primaryAddr, backup.DefaultOpTimeout), Site: "ams1", Owner: "ams1-a", Interval: interval, Lease: lease}
	if err := p.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	store := newStore(t)
	// A change every 50 ms: every snapshot has something to upload.
	changing, stopChanges := context.WithCancel(ctx)
	defer stopChanges()
	go func() {
		for i := 0; changing.Err() == nil; i++ {
			store.PutMachine(changing, inventory.Machine{Name: fmt.Sprintf("web-%04d", i), MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i/256%256, i%256), State: inventory.StateReady})
			time.Sleep(50 * time.Millisecond)
		}
	}()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, store) }()
	time.Sleep(4 * interval)
	cut := time.Now()
	g.blackhole(t, primaryAddr)
	err := <-served
	took := time.Since(cut)
	t.Logf("Serve returned %v after the cut (L %v, op deadline %v): %v", took.Round(time.Millisecond), lease, backup.DefaultOpTimeout, err)
	if !errors.Is(err, backup.ErrLeaseExpired) {
		t.Errorf("Serve: %v, want ErrLeaseExpired", err)
	}
	// Its last confirmed beat began before the cut: the lease ends within
	// L of it. An upload's deadline would come 30 s after the cut.
	if took > lease+lease/2 {
		t.Errorf("Serve returned %v after the cut, want within about L (%v)", took, lease)
	}
}
