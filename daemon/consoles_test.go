package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/ipmisim/ipmisimtest"
	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/site"
)

// TestConsolesOverSOL: the serial hub behind the browser terminal and the
// API's console reaches a machine with no lab socket through its BMC's
// IPMI Serial-over-LAN (OpenIPMI's ipmi_sim, its SOL wired to a
// pseudo-terminal the test holds as the machine): two sessions share the
// one SOL session, both see the output, keys of either reach the machine,
// and once both leave the BMC's console is free again. A Redfish machine
// has no console.
func TestConsolesOverSOL(t *testing.T) {
	const password = "hub-pw-4471"
	addr, master := ipmisimtest.StartSOL(t, "admin", password)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	s := &site.Site{Machines: []*site.Machine{
		{Name: "ipmi-01", BMC: &site.BMC{Protocol: "ipmi", Address: addr, Username: "admin", Password: password}},
		{Name: "rf-01", BMC: &site.BMC{Protocol: "redfish", Address: "http://127.0.0.1:1", Username: "admin", Password: password}},
	}}
	opener := consoleOpener{site: func() *site.Site { return s }}
	if !opener.any() {
		t.Fatal("a site with an IPMI machine offers no consoles")
	}
	hub := serial.NewHub(opener)
	received := &syncbuf.Buffer{}
	go func() { _, _ = io.Copy(received, master) }()

	a, err := hub.Attach(ctx, "ipmi-01")
	if err != nil {
		t.Fatal(err)
	}
	b, err := hub.Attach(ctx, "ipmi-01")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := master.Write([]byte("ipmi-01 login: ")); err != nil {
		t.Fatal(err)
	}
	outA, outB := gather(a), gather(b)
	waitHolds(t, "output at session a", outA.String, "ipmi-01 login: ")
	waitHolds(t, "output at session b", outB.String, "ipmi-01 login: ")
	if _, err := a.Write([]byte("root\r")); err != nil {
		t.Fatal(err)
	}
	waitHolds(t, "a's keys at the machine", received.String, "root\r")
	if _, err := b.Write([]byte("~.\r")); err != nil {
		t.Fatal(err)
	}
	waitHolds(t, "b's keys at the machine", received.String, "root\r~.\r")
	a.Close()
	b.Close()

	// The last session's leaving ended the SOL session: a new one starts.
	c, err := hub.Attach(ctx, "ipmi-01")
	if err != nil {
		t.Fatalf("attach after both left: %v", err)
	}
	defer c.Close()
	if _, err := master.Write([]byte("again\r\n")); err != nil {
		t.Fatal(err)
	}
	waitHolds(t, "output after reattach", gather(c).String, "again")

	if _, err := hub.Attach(ctx, "rf-01"); !errors.Is(err, serial.ErrNoConsole) {
		t.Errorf("console of a Redfish machine: %v, want ErrNoConsole", err)
	}
}

// gather copies a session's output into a buffer as it comes.
func gather(s *serial.Session) *syncbuf.Buffer {
	out := &syncbuf.Buffer{}
	go func() {
		for b := range s.Output() {
			out.Write(b)
		}
	}()
	return out
}

func waitHolds(t *testing.T, what string, text func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !bytes.Contains([]byte(text()), []byte(want)) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s (%q) in a minute; got %q", what, want, text())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
