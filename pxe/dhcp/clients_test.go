package dhcp

// Tests against real DHCP clients (busybox udhcpc, ISC dhclient, dhcpcd),
// each in its own network namespace of a pxetest lab, with the server in
// the lab namespace.

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// envScript writes a client hook script that saves its environment to
// dir/<event>, where the event is the script's first argument (udhcpc) or
// $reason (dhclient, dhcpcd).
func envScript(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "hook")
	s := "#!/bin/sh\nev=\"${reason:-$1}\"\n" +
		// udhcpc leaves configuring to its script; configure the address
		// as a real one would, so that it can unicast (renew, release).
		"case \"$ev\" in\n" +
		"deconfig) ip -4 addr flush dev \"$interface\" ;;\n" +
		"bound|renew) ip -4 addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\" ;;\n" +
		"esac\n" +
		"env > \"" + dir + "/$ev.tmp\" && mv \"" + dir + "/$ev.tmp\" \"" + dir + "/$ev\"\n"
	if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = strings.Trim(v, "'")
		}
	}
	return env
}

// pick returns the named keys of env, for comparing.
func pick(env map[string]string, keys ...string) map[string]string {
	m := map[string]string{}
	for _, k := range keys {
		m[k] = env[k]
	}
	return m
}

// udhcpc gets a lease with busybox udhcpc and returns what its script saw
// at "bound".
func udhcpc(t *testing.T, ns *pxetest.Netns, args ...string) map[string]string {
	t.Helper()
	env, _ := udhcpcOut(t, ns, args...)
	return env
}

// udhcpcOut is udhcpc that also returns udhcpc's output (a line for each
// DISCOVER and REQUEST it broadcast).
func udhcpcOut(t *testing.T, ns *pxetest.Netns, args ...string) (map[string]string, string) {
	t.Helper()
	pxetest.RequireTool(t, "busybox", "busybox-static")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append([]string{"udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "10", "-T", "1", "-s", envScript(t, dir)}, args...)
	out, err := ns.Command(ctx, "busybox", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	return readEnv(t, filepath.Join(dir, "bound")), string(out)
}

// dhclient gets a lease with ISC dhclient (in the foreground, stopped once
// bound) and returns what its script saw at BOUND.
func dhclient(t *testing.T, ns *pxetest.Netns) map[string]string {
	t.Helper()
	pxetest.RequireTool(t, "dhclient", "isc-dhcp-client")
	dir := t.TempDir()
	conf := filepath.Join(dir, "dhclient.conf")
	if err := os.WriteFile(conf, []byte("request subnet-mask, routers, domain-name, domain-name-servers, host-name;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := ns.Start("dhclient", "-4", "-d", "-1", "-cf", conf, "-sf", envScript(t, dir),
		"-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), "eth0")
	defer p.Stop()
	bound := filepath.Join(dir, "BOUND")
	waitFile(t, bound, p)
	return readEnv(t, bound)
}

// dhcpcd gets a lease with dhcpcd (one shot, no ARP probe) and returns
// what its script saw at BOUND. Not `dhcpcd -T`: that stops at the OFFER,
// and Debian 12's 9.4.1 crashes after printing it (Debian bug #1041204).
func dhcpcd(t *testing.T, ns *pxetest.Netns) map[string]string {
	t.Helper()
	pxetest.RequireTool(t, "dhcpcd", "dhcpcd5")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ns.Command(ctx, "dhcpcd", "-4", "--oneshot", "--nobackground", "--noarp",
		"--script", envScript(t, dir), "-f", "/dev/null", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("dhcpcd: %v\n%s", err, out)
	}
	// A lease dhcpcd kept from an earlier run (in /var/lib/dhcpcd) is
	// rebound or rebooted rather than bound afresh.
	for _, ev := range []string{"BOUND", "REBOOT", "REBIND", "RENEW"} {
		if _, err := os.Stat(filepath.Join(dir, ev)); err == nil {
			return readEnv(t, filepath.Join(dir, ev))
		}
	}
	t.Fatalf("dhcpcd ran no hook with a lease:\n%s", out)
	return nil
}

// TestRealClients: udhcpc, dhclient and dhcpcd each get their reservation
// and its options; an unknown MAC gets a pool address; a client that says
// it is a PXE ROM gets a boot file, one that says nothing gets none.
func TestRealClients(t *testing.T) {
	lab := pxetest.NewLab(t)
	hosts := []pxe.Host{
		{Name: "u-01", MAC: pxetest.MAC(1), IP: net.ParseIP("192.0.2.11")},
		{Name: "d-01", MAC: pxetest.MAC(2), IP: net.ParseIP("192.0.2.12")},
		{Name: "c-01", MAC: pxetest.MAC(3), IP: net.ParseIP("192.0.2.13"), Hostname: "c-01.lab.example"},
	}
	srv, _ := startServer(t, lab, labConfig(), newTestPolicy(hosts...), NewFileStore(filepath.Join(t.TempDir(), "leases.json")))

	udhcpcKeys := []string{"ip", "subnet", "router", "dns", "domain", "hostname", "lease", "serverid"}
	isc := []string{"new_ip_address", "new_subnet_mask", "new_routers", "new_domain_name_servers", "new_domain_name", "new_host_name", "new_dhcp_lease_time", "new_dhcp_server_identifier"}
	want := func(ip, name string) map[string]string {
		return map[string]string{"0": ip, "1": "255.255.255.0", "2": "192.0.2.254", "3": "192.0.2.53 192.0.2.54", "4": "lab.example", "5": name, "6": "600", "7": "192.0.2.1"}
	}
	numbered := func(env map[string]string, keys []string) map[string]string {
		m := map[string]string{}
		for i, k := range keys {
			m[string(rune('0'+i))] = env[k]
		}
		return m
	}
	tests := []struct {
		name string
		host pxe.Host
		run  func(*testing.T, *pxetest.Netns) map[string]string
		keys []string
	}{
		{"udhcpc", hosts[0], func(t *testing.T, ns *pxetest.Netns) map[string]string { return udhcpc(t, ns) }, udhcpcKeys},
		{"dhclient", hosts[1], dhclient, isc},
		{"dhcpcd", hosts[2], dhcpcd, isc},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := lab.AddHost(tc.name, tc.host.MAC)
			env := tc.run(t, ns)
			name := tc.host.Hostname
			if name == "" {
				name = tc.host.Name
			}
			if diff := cmp.Diff(want(tc.host.IP.String(), name), numbered(env, tc.keys)); diff != "" {
				t.Errorf("lease as %s saw it, by key %v (-want +got):\n%s", tc.name, tc.keys, diff)
			}
			if ip, ok := srv.Leases().LeasedIP(tc.host.MAC); !ok || !ip.Equal(tc.host.IP) {
				t.Errorf("server's LeasedIP = %v %v, want %v", ip, ok, tc.host.IP)
			}
		})
	}

	t.Run("unknown MAC gets the pool", func(t *testing.T) {
		mac := pxetest.MAC(100)
		env := udhcpc(t, lab.AddHost("unknown", mac))
		ip := netip.MustParseAddr(env["ip"])
		if ip.Less(netip.MustParseAddr("192.0.2.100")) || netip.MustParseAddr("192.0.2.199").Less(ip) {
			t.Errorf("unknown MAC got %v, outside the pool", ip)
		}
		if got, ok := srv.Leases().MACOf(net.IP(ip.AsSlice())); !ok || got.String() != mac.String() {
			t.Errorf("server's MACOf(%v) = %v %v, want %v", ip, got, ok, mac)
		}
		if env["boot_file"] != "" {
			t.Errorf("a client that is not a PXE ROM got boot file %q", env["boot_file"])
		}
	})

	t.Run("PXE vendor class gets a boot file and next-server", func(t *testing.T) {
		env := udhcpc(t, lab.AddHost("pxe", pxetest.MAC(1)), "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
		if diff := cmp.Diff(map[string]string{"ip": "192.0.2.11", "boot_file": "undionly.kpxe", "siaddr": "192.0.2.1"}, pick(env, "ip", "boot_file", "siaddr")); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})

	t.Run("iPXE user class gets its script URL", func(t *testing.T) {
		env := udhcpc(t, lab.AddHost("ipxe", pxetest.MAC(1)), "-x", `0x4d:"iPXE"`)
		if got, want := env["boot_file"], "http://192.0.2.1:8080/ipxe/02:00:00:00:00:01"; got != want {
			t.Errorf("boot_file %q, want %q", got, want)
		}
	})
}

// TestRestartKeepsLeases: leases survive a restart of the server on the
// same file, and each MAC gets its own address back even when it asks
// first.
func TestRestartKeepsLeases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	checkRestartKeepsLeases(t, pxetest.NewLab(t), 10, func() LeaseStore { return NewFileStore(path) }, nil)
}

// checkRestartKeepsLeases runs a server on the lease store open returns,
// leases addresses to clients pxetest.MAC(mac0) and MAC(mac0+1), calls
// stopped (if set) with them once the server stopped, restarts the server
// on a new open() and checks each MAC gets its address back even when the
// other asks first (a server that forgot would give it the first pool
// address, the other's).
func checkRestartKeepsLeases(t *testing.T, lab *pxetest.Lab, mac0 int, open func() LeaseStore, stopped func(ipA, ipB string)) {
	t.Helper()
	_, stop := startServer(t, lab, labConfig(), newTestPolicy(), open())
	a, b := lab.AddHost("a", pxetest.MAC(mac0)), lab.AddHost("b", pxetest.MAC(mac0+1))
	ipA, ipB := udhcpc(t, a)["ip"], udhcpc(t, b)["ip"]
	if ipA == ipB {
		t.Fatalf("two MACs got %s", ipA)
	}
	stop()
	if stopped != nil {
		stopped(ipA, ipB)
	}
	srv, _ := startServer(t, lab, labConfig(), newTestPolicy(), open())
	if got := udhcpc(t, b)["ip"]; got != ipB {
		t.Errorf("after restart b got %s, want %s", got, ipB)
	}
	if got := udhcpc(t, a)["ip"]; got != ipA {
		t.Errorf("after restart a got %s, want %s", got, ipA)
	}
	if ip, ok := srv.Leases().LeasedIP(pxetest.MAC(mac0)); !ok || ip.String() != ipA {
		t.Errorf("LeasedIP after restart = %v %v, want %s", ip, ok, ipA)
	}
}

// TestReleaseFrees: udhcpc releases its lease (SIGUSR2); the server
// forgets it, on disk too.
func TestReleaseFrees(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	lab := pxetest.NewLab(t)
	store := NewFileStore(filepath.Join(t.TempDir(), "leases.json"))
	srv, _ := startServer(t, lab, labConfig(), newTestPolicy(), store)
	mac := pxetest.MAC(20)
	dir := t.TempDir()
	p := lab.AddHost("r", mac).Start("busybox", "udhcpc", "-i", "eth0", "-f", "-t", "10", "-T", "1", "-s", envScript(t, dir))
	waitFile(t, filepath.Join(dir, "bound"), p)
	ip := readEnv(t, filepath.Join(dir, "bound"))["ip"]
	if _, ok := srv.Leases().LeasedIP(mac); !ok {
		t.Fatalf("no lease recorded for %v", mac)
	}
	if err := p.Signal(syscall.SIGUSR2); err != nil { // udhcpc: release the lease
		t.Fatal(err)
	}
	// The RELEASE is handled soon after: in memory, then on disk.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, leased := srv.Leases().LeasedIP(mac)
		_, owned := srv.Leases().MACOf(net.ParseIP(ip))
		if !leased && !owned && !storedRunning(t, store, ip) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease of %s to %v still held 5s after RELEASE (in memory: %v, on disk: %v):\n%s",
				ip, mac, leased || owned, storedRunning(t, store, ip), p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storedRunning reports whether store has a running lease of ip.
func storedRunning(t *testing.T, store LeaseStore, ip string) bool {
	leases, err := store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.IP.String() == ip && l.Expiry.After(time.Now()) {
			return true
		}
	}
	return false
}

// waitFile waits up to 30s for path to exist, failing early if p exits.
func waitFile(t *testing.T, path string, p *pxetest.Process) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-p.Done():
			t.Fatalf("exited before writing %s: %v\n%s", path, p.Err(), p.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s:\n%s", path, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exchange sends req from conn to dst and returns the first reply with the
// same xid, or nil after wait. A nil req only waits for the reply.
func exchange(t *testing.T, conn net.PacketConn, req []byte, xid [4]byte, dst string, wait time.Duration) []byte {
	t.Helper()
	if req != nil {
		ua, err := net.ResolveUDPAddr("udp4", dst)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteTo(req, ua); err != nil {
			t.Fatalf("send to %s: %v", dst, err)
		}
	}
	buf := make([]byte, 1500)
	deadline := time.Now().Add(wait)
	for {
		_ = conn.SetReadDeadline(deadline)
		n, _, err := conn.ReadFrom(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if n >= 8 && buf[0] == 2 && [4]byte(buf[4:8]) == xid {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

// udpIn opens a UDP socket inside ns, on port, bound to dev if not empty.
func udpIn(t *testing.T, ns *pxetest.Netns, dev string, port int) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	err := ns.Do(func() error {
		var err error
		if dev != "" {
			c, err = listen(context.Background(), dev, port, false)
			return err
		}
		c, err = net.ListenPacket("udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
