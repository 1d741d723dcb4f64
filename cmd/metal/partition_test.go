package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestPartitionDHCP is the partition test with a real `metal serve`: the
// primary answers DHCP on a lab bridge and ships heartbeats (every 1 s, L
// = 3 s) to an sshd in the same namespace; its path to the sshd is then
// black-holed with nftables (packets dropped, the server alive), and a
// standby, whose own path is whole, promotes as soon as it may (M = 1 s).
// A client asks for a lease all along. Recorded: the last DHCP answer of
// the primary, the moment its serve exited (it stops serving DHCP no later
// than that), and the moment promote succeeded; the overlap, exit minus
// promote, must be <= 0 s, and no DHCP answer comes after the promote.
func TestPartitionDHCP(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	pxetest.RequireTool(t, "nft", "nftables")
	metalBin := buildMetal(t)
	lab := pxetest.NewLab(t)
	client := lab.AddHost("c1", pxetest.MAC(1))
	ns := lab.NS().Name
	d := sshdtest.StartWith(t, sshdtest.Options{Netns: ns, Dial: netns.Dialer(ns)})

	dir := t.TempDir()
	sitePath := labSite(t, dir, "ams1", "")
	// The primary reaches the sshd from 127.0.0.1 (the kernel's choice),
	// the standby from 127.0.0.2: the cut drops the first alone.
	srv := lab.NS().Start(metalBin, "serve", "--tftp-addr", "192.0.2.1:69", "--api-listen", "127.0.0.1:0", "--owner", "ams1-a",
		"--backup-to", d.URL("ams1"), "--backup-every", "1s", "--known-hosts", d.KnownHosts, "-i", d.ClientKey, sitePath)
	var exited time.Time
	exit := make(chan struct{})
	go func() { <-srv.Done(); exited = time.Now(); close(exit) }()
	leaseWithRetry(t, client, srv)

	// A lease asked for every 200 ms; each answer's time is kept.
	var (
		mu      sync.Mutex
		answers []time.Time
	)
	probeCtx, stopProbe := context.WithCancel(context.Background())
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for probeCtx.Err() == nil {
			ctx, cancel := context.WithTimeout(probeCtx, 3*time.Second)
			err := client.Command(ctx, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "1", "-T", "1", "-s", "/bin/true").Run()
			cancel()
			if err == nil {
				mu.Lock()
				answers = append(answers, time.Now())
				mu.Unlock()
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	// The standby's connection to the backup directory.
	opts := backup.SSHOptions{KnownHosts: d.KnownHosts, KeyFiles: []string{d.ClientKey}, AgentSocket: "none", Timeout: 5 * time.Second,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := netns.Do(ns, func() error {
				var err error
				c, err = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}
	target, err := backup.ParseTarget(d.URL("ams1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	standby, err := backup.Dial(ctx, target, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Close()
	promote := backup.PromoteOptions{Site: "ams1", Owner: "ams1-b", Margin: time.Second}
	// Once it beats, promote is refused.
	for {
		_, err := backup.Promote(ctx, standby, promote)
		if errors.Is(err, backup.ErrPrimaryAlive) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("promote beside the running primary: %v, want ErrPrimaryAlive\n%s", err, srv.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}

	cut := time.Now()
	rules := fmt.Sprintf(`table inet metal_cut {
  chain out {
    type filter hook output priority 0; policy accept;
    ip saddr 127.0.0.1 tcp dport %[1]d drop
    ip daddr 127.0.0.1 tcp sport %[1]d drop
  }
}
`, d.Port)
	nft := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(rules)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}

	var promoted time.Time
	for {
		_, err := backup.Promote(ctx, standby, promote)
		if err == nil {
			promoted = time.Now()
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("promote never succeeded: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-exit:
	case <-time.After(time.Minute):
		t.Fatalf("the primary's serve still runs a minute after the cut:\n%s", srv.Log())
	}
	stopProbe()
	<-probeDone
	mu.Lock()
	defer mu.Unlock()
	if len(answers) == 0 {
		t.Fatal("the client never got a lease")
	}
	last := answers[len(answers)-1]
	overlap := exited.Sub(promoted)
	t.Logf("cut at 0: primary's last DHCP answer at %v, its serve exited at %v, promote succeeded at %v; overlap %v (%d answers)",
		last.Sub(cut).Round(time.Millisecond), exited.Sub(cut).Round(time.Millisecond), promoted.Sub(cut).Round(time.Millisecond),
		overlap.Round(time.Millisecond), len(answers))
	if overlap > 0 {
		t.Errorf("overlap %v: the primary's serve ran after the promote succeeded", overlap)
	}
	if last.After(promoted) {
		t.Errorf("a DHCP answer at %v came after the promote at %v", last.Sub(cut), promoted.Sub(cut))
	}
	if !strings.Contains(srv.Log(), "lease") {
		t.Errorf("the primary's log does not say why it stopped:\n%s", srv.Log())
	}
	if err := backup.CheckMark(filepath.Join(dir, "state"), "ams1"); !errors.Is(err, backup.ErrFenced) {
		t.Errorf("the stopped primary left no fence mark: %v", err)
	}
}

// labSiteOn is the site of the failover tests that serve DHCP: site ams1,
// its store at state, served on iface, with more attributes of the
// network.
func labSiteOn(state, iface, network string) string {
	return fmt.Sprintf(`
site "ams1" {
  state  = %q
  listen = "192.0.2.1:8080"
}
network "lab" {
  interface = %q
  subnet    = "192.0.2.0/24"
  gateway   = "192.0.2.1"
  pool      = "192.0.2.100-192.0.2.150"
%s}
`, state, iface, network)
}
