package freeport_test

import (
	"net"
	"strconv"
	"testing"

	"github.com/metal-dev/metal/internal/freeport"
)

// TestGet: the port binds, and it is not one the kernel gives to a ":0"
// socket (below the ephemeral range, which starts at 32768 or later on
// every Linux default).
func TestGet(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		for range 20 {
			port, err := freeport.Get(network, "127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			if port < 10000 || port >= 32768 {
				t.Errorf("%s port %d outside 10000-32767", network, port)
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			if network == "udp" {
				c, err := net.ListenPacket("udp4", addr)
				if err != nil {
					t.Fatalf("the free address %s does not bind: %v", addr, err)
				}
				c.Close()
				continue
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("the free address %s does not bind: %v", addr, err)
			}
			ln.Close()
		}
	}
}
