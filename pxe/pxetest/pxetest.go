// Package pxetest builds throwaway network labs for netboot tests: a network
// namespace holding a bridge (the lab's "switch" and the server's side), and
// one namespace per client machine, each with an eth0 plugged into that
// bridge. Servers under test run inside the lab namespace (Netns.Do), real
// clients (udhcpc, dhclient, dhcpcd, tftp, curl, QEMU) run inside their own
// namespaces (Netns.Command, Netns.Start).
//
// Everything a lab creates is removed by t.Cleanup: its processes are killed
// (only those it started, by process group), its namespaces deleted (which
// removes their links). Nothing is created in the root namespace, so labs of
// tests running in parallel, in this package or others, never see each other.
//
// Addresses come from the documentation ranges only: the lab's bridge has
// 192.0.2.1/24 (ServerIP); 198.51.100.0/24 and 203.0.113.0/24 are free for
// relayed subnets and similar.
//
// Labs need root (to create namespaces) and iproute2's `ip`; a test that
// lacks them fails with a message saying what to install.
package pxetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/internal/testenv"
)

// Addresses every lab uses. The lab namespace owns ServerIP on its bridge.
var (
	LabSubnet = netip.MustParsePrefix("192.0.2.0/24")
	ServerIP  = netip.MustParseAddr("192.0.2.1")
	// RelaySubnetA and RelaySubnetB are for tests that put clients behind a
	// relay; nothing in a fresh lab uses them.
	RelaySubnetA = netip.MustParsePrefix("198.51.100.0/24")
	RelaySubnetB = netip.MustParsePrefix("203.0.113.0/24")
	// LabSubnet6 and ServerIP6 are an IPv6-only lab's link (IPv6Only),
	// from the documentation prefix 2001:db8::/32; RelaySubnet6 is for a
	// relayed IPv6 link.
	LabSubnet6   = netip.MustParsePrefix("2001:db8:0:1::/64")
	ServerIP6    = netip.MustParseAddr("2001:db8:0:1::1")
	RelaySubnet6 = netip.MustParsePrefix("2001:db8:0:2::/64")
)

// BridgeName is the name of the bridge inside the lab namespace; servers
// bind to it.
const BridgeName = "br0"

// Lab is one isolated network: a namespace with a bridge, and client
// namespaces plugged into it.
type Lab struct {
	t   testing.TB
	id  string
	dir string // logs of the processes the lab started
	ns  *Netns

	mu    sync.Mutex
	nsAll []*Netns   // every namespace created, in order
	procs []*Process // every process started
	links int        // counter for unique veth names
}

// Netns is one network namespace created by a lab.
type Netns struct {
	// Name is the namespace's name, as `ip netns` knows it ("mtl-1a2b3c").
	Name string
	lab  *Lab
}

// NewLab creates a lab namespace "mtl-<random>" with the bridge BridgeName up
// and ServerIP/24 on it. It fails the test if the machine cannot make one
// (not root, no iproute2).
func NewLab(t testing.TB) *Lab {
	t.Helper()
	testenv.Root(t, "network namespaces")
	RequireTool(t, "ip", "iproute2")
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("pxetest: random lab id: %v", err)
	}
	l := &Lab{t: t, id: hex.EncodeToString(b[:]), dir: t.TempDir()}
	t.Cleanup(l.cleanup)

	l.ns = l.newNetns("mtl-" + l.id)
	l.ns.MustIP("link", "add", BridgeName, "type", "bridge")
	// No STP and no forwarding delay: a port must pass DHCP the moment a
	// client namespace is plugged in, as an edge port on a real switch does.
	l.ns.MustIP("link", "set", BridgeName, "type", "bridge", "stp_state", "0", "forward_delay", "0")
	l.ns.MustIP("addr", "add", netip.PrefixFrom(ServerIP, LabSubnet.Bits()).String(), "dev", BridgeName)
	l.ns.MustIP("link", "set", BridgeName, "up")
	return l
}

// NS returns the lab namespace: the one holding the bridge and ServerIP,
// where servers under test run.
func (l *Lab) NS() *Netns { return l.ns }

// ID returns the lab's random id, part of every name it creates.
func (l *Lab) ID() string { return l.id }

// IPv6Only makes the lab's link IPv6 only: the bridge loses ServerIP
// and gains ServerIP6 (nodad: usable at once, as a DHCPv6 server or a
// router advertisement needs it before a client asks). CheckIPv6Only
// then proves that nothing the lab made has an IPv4 address.
func (l *Lab) IPv6Only() {
	l.t.Helper()
	l.ns.MustIP("-4", "addr", "flush", "dev", BridgeName)
	l.ns.MustIP("addr", "add", netip.PrefixFrom(ServerIP6, LabSubnet6.Bits()).String(), "dev", BridgeName, "nodad")
}

// CheckIPv6Only fails the test if any namespace of the lab holds a
// global IPv4 address.
func (l *Lab) CheckIPv6Only() {
	l.t.Helper()
	l.mu.Lock()
	nss := append([]*Netns(nil), l.nsAll...)
	l.mu.Unlock()
	for _, n := range nss {
		out, err := n.IP("-4", "addr", "show", "scope", "global")
		if err != nil || bytes.Contains(out, []byte("inet ")) {
			l.t.Errorf("pxetest: an IPv4 address in %s: %v\n%s", n.Name, err, out)
		}
	}
}

// WaitIPv6 waits until dev in n has its IPv6 link-local address and no
// address still tentative (in duplicate address detection, a second or
// so after the link comes up): until then a DHCPv6 client or relay
// cannot bind to it.
func (n *Netns) WaitIPv6(dev string) {
	t := n.lab.t
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := n.IP("-6", "addr", "show", "dev", dev)
		if err == nil && bytes.Contains(out, []byte("scope link")) && !bytes.Contains(out, []byte("tentative")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pxetest: %s in %s has no usable IPv6 link-local address within 10s: %v\n%s", dev, n.Name, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AddTap makes a tap device in the lab namespace, plugged into the
// bridge, for a QEMU VM's NIC, and returns QEMU's -netdev value for it
// (id n0).
func (l *Lab) AddTap(name string) string {
	l.t.Helper()
	l.ns.MustIP("tuntap", "add", name, "mode", "tap")
	l.ns.MustIP("link", "set", name, "master", BridgeName, "up")
	return "tap,id=n0,ifname=" + name + ",script=no,downscript=no"
}

// AddHost creates a client namespace "mtl-<id>-<name>" whose eth0 (with the
// given MAC, or a random locally administered one if mac is nil) is plugged
// into the lab's bridge. eth0 is up with no IPv4 address; lo is up.
func (l *Lab) AddHost(name string, mac net.HardwareAddr) *Netns {
	l.t.Helper()
	return l.AddHostTo(name, mac, l.ns, BridgeName)
}

// AddHostTo is AddHost with the host plugged into another bridge: bridge
// in namespace sw (a rack's switch behind a relay, say, which the test
// made with AddBridge).
func (l *Lab) AddHostTo(name string, mac net.HardwareAddr, sw *Netns, bridge string) *Netns {
	l.t.Helper()
	n := l.newNetns("mtl-" + l.id + "-" + name)
	l.mu.Lock()
	l.links++
	port := fmt.Sprintf("p%d", l.links) // inside the switch's namespace: short and unique there
	l.mu.Unlock()
	sw.MustIP("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.Name)
	sw.MustIP("link", "set", port, "master", bridge, "up")
	if mac == nil {
		mac = RandomMAC()
	}
	n.MustIP("link", "set", "eth0", "address", mac.String())
	n.MustIP("link", "set", "eth0", "up")
	l.waitLinkReady(n, sw, port)
	return n
}

// AddBridge makes a bridge named name in namespace n, up, with addr (a
// prefix, "" for none) on it, forwarding at once as the lab's own does.
func (l *Lab) AddBridge(n *Netns, name, addr string) {
	l.t.Helper()
	n.MustIP("link", "add", name, "type", "bridge")
	n.MustIP("link", "set", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
	if addr != "" {
		n.MustIP("addr", "add", addr, "dev", name)
	}
	n.MustIP("link", "set", name, "up")
}

// waitLinkReady waits until the host's eth0 is up with its carrier and its
// bridge port forwards. Until the kernel's link watcher has seen the
// carrier (it batches such events, up to a second apart, and later while
// another namespace is being torn down) the link has no queue yet and
// drops what is sent: a test's first DHCP packet would be lost.
func (l *Lab) waitLinkReady(n, sw *Netns, port string) {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		host, herr := n.IP("-o", "link", "show", "eth0")
		br, berr := sw.IP("-d", "-o", "link", "show", port)
		if herr == nil && berr == nil && bytes.Contains(host, []byte("state UP")) &&
			bytes.Contains(br, []byte("state UP")) && bytes.Contains(br, []byte("bridge_slave state forwarding")) {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("pxetest: %s's eth0 not up and forwarding within 10s:\n%s\n%s", n.Name, host, br)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newNetns creates a namespace with lo up and records it for cleanup.
func (l *Lab) newNetns(name string) *Netns {
	l.t.Helper()
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	if err != nil {
		l.t.Fatalf("pxetest: ip netns add %s: %v: %s", name, err, out)
	}
	n := &Netns{Name: name, lab: l}
	l.mu.Lock()
	l.nsAll = append(l.nsAll, n)
	l.mu.Unlock()
	n.MustIP("link", "set", "lo", "up")
	return n
}

func (l *Lab) cleanup() {
	l.mu.Lock()
	procs, nss := l.procs, l.nsAll
	l.procs, l.nsAll = nil, nil
	l.mu.Unlock()
	for _, p := range procs {
		p.Stop()
	}
	if l.t.Failed() {
		for _, p := range procs {
			out, _ := os.ReadFile(p.log)
			l.t.Logf("pxetest: %s in %s (%s):\n%s", p.name, p.ns, p.log, out)
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", nss[i].Name).CombinedOutput(); err != nil {
			l.t.Errorf("pxetest: ip netns del %s: %v: %s", nss[i].Name, err, out)
		}
	}
}

// IP runs `ip -n <ns> args...` and returns its combined output.
func (n *Netns) IP(args ...string) ([]byte, error) {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ip -n %s %s: %w: %s", n.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// MustIP is IP that fails the test on error.
func (n *Netns) MustIP(args ...string) {
	n.lab.t.Helper()
	if _, err := n.IP(args...); err != nil {
		n.lab.t.Fatalf("pxetest: %v", err)
	}
}

// Command returns a command that runs name inside the namespace (through
// `ip netns exec`, which also gives it the namespace's /etc/netns files).
// The caller runs and waits for it; use Start for background processes.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	// Own process group, so that a timeout kills what the command started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// Process is a background process started by Netns.Start. The lab kills it
// at cleanup if it is still running, and prints its log if the test failed.
type Process struct {
	name, ns, log string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error
}

// Start runs name inside the namespace in the background, with stdout and
// stderr going to a log file (Process.Log). It fails the test if the
// process cannot start.
func (n *Netns) Start(name string, args ...string) *Process {
	l := n.lab
	l.t.Helper()
	l.mu.Lock()
	logPath := filepath.Join(l.dir, fmt.Sprintf("%02d-%s.log", len(l.procs), filepath.Base(name)))
	l.mu.Unlock()
	f, err := os.Create(logPath)
	if err != nil {
		l.t.Fatalf("pxetest: %v", err)
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// With Pdeathsig (StartChild): a test binary that go test kills at its
	// timeout leaves no QEMU behind, running on into the next package's
	// tests (a TestNetboot QEMU outlived its test by 23 minutes).
	child, err := testenv.StartChild(cmd)
	if err != nil {
		l.t.Fatalf("pxetest: start %s in %s: %v", name, n.Name, err)
	}
	p := &Process{name: name, ns: n.Name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = child.Wait()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p
}

// Log returns what the process has written so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// Pid returns the process's id. `ip netns exec` execs the command, so
// this is the command itself (and what it execs in turn).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the process's exit error once Done is closed.
func (p *Process) Err() error { <-p.done; return p.err }

// Signal sends sig to the process (not its group). `ip netns exec` execs
// the command, so this is the command itself.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop kills the process's group (SIGTERM, then SIGKILL after 2s) and waits
// for it. Stopping an exited process does nothing.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Do runs fn on an OS thread that has entered the namespace, and returns
// fn's error. Sockets that fn opens belong to the namespace for their whole
// life, even when later used from other goroutines; that is how a server
// under test is put in the lab:
//
//	go lab.NS().Do(func() error { return srv.Serve(ctx) })
//
// as long as the server opens its sockets before starting goroutines
// (goroutines fn starts run on other threads, in the root namespace).
func (n *Netns) Do(fn func() error) error { return netns.Do(n.Name, fn) }

// Serve runs each of servers inside n, on a context of ctx, until stop is
// called: stop cancels them and waits until every one has returned. A
// server that fails is a test error naming it.
func (n *Netns) Serve(t testing.TB, ctx context.Context, servers map[string]func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for name, serve := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Do(func() error { return serve(ctx) }); err != nil {
				t.Errorf("%s server: %v", name, err)
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// RequireTool is testenv.Tool: the path of program, or the test fails
// saying which Debian package provides it.
func RequireTool(t testing.TB, program, debianPackage string) string {
	t.Helper()
	return testenv.Tool(t, program, debianPackage)
}

// RandomMAC returns a random unicast, locally administered MAC address.
func RandomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac)
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// MAC returns the deterministic test MAC 02:00:00:00:hi:lo for i, for tests
// that need predictable addresses across namespaces and restarts.
func MAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
}
