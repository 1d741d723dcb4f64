package testenv_test

import (
	"net"
	"strconv"
	"testing"

	"github.com/metal-dev/metal/internal/testenv"
)

// TestFreePort: the port binds, and it is not one the kernel gives to a
// ":0" socket (below the ephemeral range, which starts at 32768 or later
// on every Linux default).
func TestFreePort(t *testing.T) {
	for range 20 {
		addr := testenv.FreeAddr(t)
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port < 10000 || port >= 32768 {
			t.Errorf("port %d outside 10000-32767", port)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("the free address %s does not bind: %v", addr, err)
		}
		ln.Close()
	}
}
