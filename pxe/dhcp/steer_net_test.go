package dhcp

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestSteeredSockets: in a lab, a broadcast DISCOVER reaches the first
// of listenSteered's sockets only, a REQUEST (broadcast, and unicast as
// a renewing client sends it) the second only, and so does a declared
// machine's DISCOVER once its MAC is declared (then undeclared again).
func TestSteeredSockets(t *testing.T) {
	lab := pxetest.NewLab(t)
	conns, err := listenSteeredIn(lab)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		defer c.Close()
	}
	if len(conns) != 2 {
		t.Fatalf("%d sockets, want 2: the kernel refused the BPF programs", len(conns))
	}
	host := lab.AddHost("c", pxetest.MAC(70))
	host.MustIP("addr", "add", "192.0.2.70/24", "dev", "eth0")
	client := udpIn(t, host, "eth0", clientPort)
	mac, declared := pxetest.MAC(70), pxetest.MAC(71)
	if err := declare(conns, nil, []net.HardwareAddr{pxetest.MAC(3), declared}); err != nil {
		t.Fatal(err)
	}
	tests := map[string]steerCase{
		"broadcast DISCOVER":                    {discover(mac), "255.255.255.255:67", 0},
		"broadcast REQUEST":                     {request(mac), "255.255.255.255:67", 1},
		"unicast REQUEST":                       {request(mac, dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 70))), "192.0.2.1:67", 1},
		"unicast DISCOVER":                      {discover(mac), "192.0.2.1:67", 0},
		"declared machine's broadcast DISCOVER": {discover(declared), "255.255.255.255:67", 1},
		"declared machine's unicast DISCOVER":   {discover(declared), "192.0.2.1:67", 1},
	}
	check(t, conns, client, tests)
	if err := declare(conns, []net.HardwareAddr{pxetest.MAC(3), declared}, []net.HardwareAddr{pxetest.MAC(3)}); err != nil {
		t.Fatal(err)
	}
	check(t, conns, client, map[string]steerCase{"DISCOVER of a machine no longer declared": {discover(declared), "255.255.255.255:67", 0}})
}

// steerCase is a packet sent to dst, and the socket it must reach.
type steerCase struct {
	pkt  *dhcpv4.DHCPv4
	dst  string
	want int
}

// check sends each test's packet from client and fails unless it reaches
// the socket of conns the test wants, and only that one.
func check(t *testing.T, conns []net.PacketConn, client net.PacketConn, tests map[string]steerCase) {
	t.Helper()
	for name, tc := range tests {
		ua, err := net.ResolveUDPAddr("udp4", tc.dst)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.WriteTo(tc.pkt.ToBytes(), ua); err != nil {
			t.Fatal(err)
		}
		for i, c := range conns {
			buf := make([]byte, 1500)
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, _, err := c.ReadFrom(buf)
			got := err == nil && n > 8 && [4]byte(buf[4:8]) == tc.pkt.TransactionID
			if got != (i == tc.want) {
				t.Errorf("%s: socket %d got it: %v, want it in socket %d only", name, i, got, tc.want)
			}
		}
	}
}

// TestSecondServerRefused: a second server on an interface whose port 67
// a steered pair holds fails to start (once bindRetryFor is spent),
// rather than sharing the port: the first socket of each pair binds it
// alone, and the pair's first socket joins its group only once bound.
func TestSecondServerRefused(t *testing.T) {
	t.Parallel()
	lab := pxetest.NewLab(t)
	for _, want := range []error{nil, syscall.EADDRINUSE} {
		conns, err := listenSteeredIn(lab)
		for _, c := range conns {
			defer c.Close()
		}
		if !errors.Is(err, want) {
			t.Fatalf("listenSteered: %v, want %v", err, want)
		}
	}
}

// listenSteeredIn opens port 67 of the lab's bridge as listenSteered does.
func listenSteeredIn(lab *pxetest.Lab) ([]net.PacketConn, error) {
	var conns []net.PacketConn
	err := lab.NS().Do(func() error {
		var err error
		conns, err = listenSteered(context.Background(), pxetest.BridgeName, serverPort)
		return err
	})
	return conns, err
}
