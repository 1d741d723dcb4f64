package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestPartitionDHCP is the partition test with a real `metal serve`: the
// primary answers DHCP on a lab bridge and ships heartbeats (every 1 s, L
// = 3 s) to an sshd in the same namespace; its path to the sshd is then
// black-holed with nftables (packets dropped, the server alive), and a
// standby, whose own path is whole, promotes. A client asks for a lease
// all along. Recorded: the last DHCP answer of the primary, the moment
// its serve exited (it stops serving DHCP no later than that), and the
// moment promote succeeded; the overlap, exit minus promote, must be
// <= 0 s, and no DHCP answer comes after the promote.
//
//   - lease: the standby promotes as soon as promote lets it (M = 1 s);
//     the primary stops by itself when its lease ends.
//   - fence: the primary's host sits behind a Redfish BMC (metal's
//     virtual BMC: power on starts the serve, power off kills it as
//     pulling the power would), and the standby promotes at once after
//     the cut, forced, with that BMC as its fence: the BMC saw the
//     power-off, and promote returned only after it.
func TestPartitionDHCP(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	pxetest.RequireTool(t, "nft", "nftables")
	metalBin := buildMetal(t)
	for _, fenced := range []bool{false, true} {
		name := "lease"
		if fenced {
			name = "fence"
		}
		t.Run(name, func(t *testing.T) { partitionDHCP(t, metalBin, fenced) })
	}
}

func partitionDHCP(t *testing.T, metalBin string, fenced bool) {
	lab := pxetest.NewLab(t)
	client := lab.AddHost("c1", pxetest.MAC(1))
	ns := lab.NS().Name
	d := sshdtest.StartWith(t, sshdtest.Options{Netns: ns, Dial: netns.Dialer(ns)})
	ctx := testCtx(t)

	dir := t.TempDir()
	sitePath := labSite(t, dir, "ams1", "")
	// The primary reaches the sshd from 127.0.0.1 (the kernel's choice),
	// the standby from 127.0.0.2: the cut drops the first alone.
	serve := func() *pxetest.Process {
		return lab.NS().Start(metalBin, "serve", "--tftp-addr", "192.0.2.1:69", "--api-listen", "127.0.0.1:0", "--owner", "ams1-a",
			"--backup-to", d.URL("ams1"), "--backup-every", "1s", "--known-hosts", d.KnownHosts, "-i", d.ClientKey, sitePath)
	}
	var (
		srv      *pxetest.Process
		host     *processHost
		powerOff func(context.Context) error
	)
	if fenced {
		host = &processHost{start: serve, up: make(chan struct{})}
		_, c := behindRedfish(t, ctx, host, "partition-fence-pw")
		powerOff = func(ctx context.Context) error { return bmc.Fence(ctx, c) }
		srv = host.running()
	} else {
		srv = serve()
	}
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
	if _, err := netns.CutLoopbackTCP(ctx, ns, d.Port); err != nil {
		t.Fatal(err)
	}

	if fenced {
		// The fence makes waiting out the lease needless: forced, at once.
		promote.Force, promote.PowerOff, promote.FenceRequired = true, powerOff, true
	}
	var (
		promoted time.Time
		res      backup.Promotion
	)
	for {
		res, err = backup.Promote(ctx, standby, promote)
		if err == nil {
			promoted = time.Now()
			break
		}
		if ctx.Err() != nil || fenced {
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
	if fenced {
		if offs := host.powerOffs(); offs == 0 || !res.PoweredOff {
			t.Errorf("the fence BMC saw %d power-offs, promote says powered off: %v (%v)", offs, res.PoweredOff, res.PowerOffErr)
		}
		return
	}
	if !strings.Contains(srv.Log(), "lease") {
		t.Errorf("the primary's log does not say why it stopped:\n%s", srv.Log())
	}
	if err := backup.CheckMark(filepath.Join(dir, "state"), "ams1"); !errors.Is(err, backup.ErrFenced) {
		t.Errorf("the stopped primary left no fence mark: %v", err)
	}
}

// processHost is a host whose power is a process: a virtual BMC's
// machine that runs start's process while powered on, and kills it
// (SIGKILL, waited for) on power off, as pulling the power would.
type processHost struct {
	start func() *pxetest.Process

	mu   sync.Mutex
	proc *pxetest.Process
	offs int
	// up is closed once a process first runs.
	up      chan struct{}
	started bool
}

// running waits until a process runs and returns it.
func (h *processHost) running() *pxetest.Process {
	<-h.up
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.proc
}

func (h *processHost) powerOffs() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.offs
}

func (h *processHost) on() bool {
	if h.proc == nil {
		return false
	}
	select {
	case <-h.proc.Done():
		return false
	default:
		return true
	}
}

func (h *processHost) PowerState(context.Context) (virtual.Power, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.on() {
		return virtual.PowerOn, nil
	}
	return virtual.PowerOff, nil
}

func (h *processHost) PowerOn(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.on() {
		h.proc = h.start()
		if !h.started {
			h.started = true
			close(h.up)
		}
	}
	return nil
}

func (h *processHost) PowerOff(context.Context, bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.offs++
	if h.on() {
		_ = h.proc.Signal(syscall.SIGKILL) // the test's own process
		<-h.proc.Done()
	}
	return nil
}

func (h *processHost) Reset(ctx context.Context) error {
	if err := h.PowerOff(ctx, true); err != nil {
		return err
	}
	return h.PowerOn(ctx)
}

func (h *processHost) SetBootDevice(context.Context, virtual.Boot) error { return nil }
func (h *processHost) InsertMedia(context.Context, string) error         { return nil }
func (h *processHost) EjectMedia(context.Context) error                  { return nil }

// behindRedfish serves machine behind a Redfish BMC (metal's virtual
// BMC) on loopback and powers it on through that BMC; it returns the
// BMC's address and a client of it.
func behindRedfish(t *testing.T, ctx context.Context, machine virtual.Machine, password string) (string, *bmc.Client) {
	t.Helper()
	srv, err := virtual.NewServer(virtual.Options{Username: "admin", Password: password}, virtual.MachineSpec{Name: "primary-host", Machine: machine})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.Serve(sctx, ln, nil)
	c, err := bmc.New(bmc.Config{Machine: "primary-host", Protocol: "redfish", Address: "http://" + ln.Addr().String(), Username: "admin", Password: bmc.Secret(password)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String(), c
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
