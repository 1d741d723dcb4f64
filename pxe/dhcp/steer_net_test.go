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
// a renewing client sends it) the second only.
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
	mac := pxetest.MAC(70)
	tests := map[string]struct {
		pkt  *dhcpv4.DHCPv4
		dst  string
		want int
	}{
		"broadcast DISCOVER": {discover(mac), "255.255.255.255:67", 0},
		"broadcast REQUEST":  {request(mac), "255.255.255.255:67", 1},
		"unicast REQUEST":    {request(mac, dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 70))), "192.0.2.1:67", 1},
		"unicast DISCOVER":   {discover(mac), "192.0.2.1:67", 0},
	}
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
