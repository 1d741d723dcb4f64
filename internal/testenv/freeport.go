package testenv

import (
	"net"
	"strconv"

	"github.com/metal-dev/metal/internal/freeport"
)

// FreePort returns a TCP port on host (an address such as 127.0.0.1) that
// is free now and outside the kernel's ephemeral range (see freeport), for
// a server a test starts as a process or that takes an address rather
// than a listener.
func FreePort(host string) (int, error) { return freeport.Get("tcp", host) }

// FreeAddr is FreePort on 127.0.0.1 as "127.0.0.1:PORT"; it fails t if
// none is free.
func FreeAddr(t interface {
	Helper()
	Fatal(...any)
}) string {
	t.Helper()
	port, err := FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
