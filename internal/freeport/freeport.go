// Package freeport finds a loopback port that is free now, for a server
// started as a process or configured by address rather than handed a
// listener (tests, and the benchmarks' peers).
//
// The port is taken below the kernel's ephemeral range: a port that
// bind(":0") handed out and the caller then closed goes back to that
// range, where the next client socket or ":0" listener of anyone may take
// it before the server binds it (a daemon test's console was once
// answered by a simulated BMC that had got its port that way). Ports below
// the range are given out by no one but callers that pick them at random,
// as this does.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Get returns a port on host (an address such as 127.0.0.1) that is free
// now for network, "tcp" or "udp".
func Get(network, host string) (int, error) {
	low := ephemeralLow()
	const floor = 10000
	if low-floor < 1000 {
		return fromKernel(network, host)
	}
	for range 100 {
		port := floor + rand.IntN(low-floor)
		if bindable(network, net.JoinHostPort(host, strconv.Itoa(port))) == nil {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free %s port on %s in %d-%d after 100 tries", network, host, floor, low-1)
}

func bindable(network, addr string) error {
	if network == "udp" {
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ln.Close()
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

func fromKernel(network, host string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp4", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
