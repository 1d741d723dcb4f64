package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// FreePort returns a TCP port on host (an address such as 127.0.0.1) that
// is free now, for a server a test starts as a process or that takes an
// address rather than a listener.
//
// The port is taken below the kernel's ephemeral range: a port that
// bind(":0") handed out and the test then closed goes back to that range,
// where the next client socket or ":0" listener of any test may take it
// before the server binds it (a daemon test's console was once answered by
// a simulated BMC that had got its port that way). Ports below the range
// are given out by no one but tests that pick them at random, as this does.
func FreePort(host string) (int, error) {
	low := ephemeralLow()
	const floor = 10000
	if low-floor < 1000 {
		return portFromKernel(host)
	}
	for range 100 {
		port := floor + rand.IntN(low-floor)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free TCP port on %s in %d-%d after 100 tries", host, floor, low-1)
}

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

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return low
}

func portFromKernel(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
