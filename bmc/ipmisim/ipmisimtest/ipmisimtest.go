// Package ipmisimtest runs OpenIPMI's ipmi_sim for tests with its
// Serial-over-LAN wired to a serial line whose machine end the test
// holds: what the test writes there the machine printed, what it reads
// there reached the machine's serial input.
package ipmisimtest

import (
	"os"
	"testing"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/ipmisim"
)

// SerialLine is a serial line: the machine's end is the master of a
// pseudo-terminal, the BMC's end its device path, which ipmi_sim opens as
// the machine's serial port. Both close when the test ends.
func SerialLine(t testing.TB) (machine *os.File, device string) {
	t.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	// A serial line passes bytes as they are: no echo, no line editing,
	// no CR/LF translation.
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		t.Fatal(err)
	}
	// The device stays open here too, so that the machine's end never
	// reads a hang-up while ipmi_sim reopens it.
	t.Cleanup(func() { master.Close(); slave.Close() })
	return master, slave.Name()
}

// StartSOL runs ipmi_sim on a free loopback UDP port with one admin user
// and SOL on a SerialLine, and returns its address and the machine's end
// of the line. Its chassis is never powered on (no QEMU is needed); it
// stops when the test ends.
func StartSOL(t testing.TB, user, password string) (addr string, machine *os.File) {
	t.Helper()
	testpeer.Need(t, "ipmitool", "ipmitool")
	machine, device := SerialLine(t)
	_, p := testpeer.RunIPMISim(t, ipmisim.Config{Name: "sol", Username: user, Password: password, SOL: device,
		QEMU: []string{"false"}})
	return p.Addr(), machine
}
