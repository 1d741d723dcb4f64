package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/ipmisim/ipmisimtest"
	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/internal/serialterm"
	"github.com/metal-dev/metal/internal/syncbuf"
)

// TestConsoleLogOverSOL: metal serve holds the SOL session of a machine
// behind ipmi_sim and logs what the machine prints; `metal machines show`
// ends with that log's tail; `metal console` joins serve's stream (a
// second SOL activation would fail) and its keys reach the machine; what
// the machine printed while someone watched is in the log too.
func TestConsoleLogOverSOL(t *testing.T) {
	const password = "sol-pw-4417"
	addr, machine := ipmisimtest.StartSOL(t, "admin", password)
	l := newServeLabEdit(t, 1, time.Second, testRollout, func(src string) string {
		return src + fmt.Sprintf(`
machine "sol-01" {
  mac = "52:54:00:00:00:31"
  bmc {
    protocol = "ipmi"
    address  = %q
    username = "admin"
    password = %q
  }
}
`, addr, password)
	})
	logPath := daemon.ConsoleLogPath(filepath.Join(l.dir, "state"), "sol-01")
	logged := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	received := ptyReader(machine)

	// What the machine prints before serve holds the session is lost, as
	// on a serial line nobody listens to: print until the log has it.
	for i := 0; !strings.Contains(logged(), "early line"); i++ {
		if i == 600 {
			t.Fatalf("serve logged nothing of sol-01 in a minute; serve said:\n%s", l.out.String())
		}
		if _, err := fmt.Fprintf(machine, "early line %d\r\n", i); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := machine.Write([]byte("sol-01 login: (held by serve)\r\n")); err != nil {
		t.Fatal(err)
	}
	waitText(t, "the login line in the log", logged, "sol-01 login: (held by serve)")

	code, stdout, stderr := metal(t, nil, "machines", "show", "--site", l.site, "sol-01")
	if code != 0 || !strings.Contains(stdout, "Console (last") || !strings.Contains(stdout, "| sol-01 login: (held by serve)") {
		t.Fatalf("machines show: exit %d\n%s%s", code, stdout, stderr)
	}

	keys, typing := io.Pipe()
	defer typing.Close()
	var out, errs syncbuf.Buffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"console", "--site", l.site, "sol-01"}, keys, &out, &errs) }()
	waitText(t, "how the console went", errs.String, "through metal serve's console hub")
	waitText(t, "the scrollback in the console", out.String, "sol-01 login: (held by serve)")
	// ipmi_sim may drop the first packet of the session serve holds
	// (TestConsoleOverSOL says why): type until a key arrives.
	for i := 0; !strings.Contains(received(), "k"); i++ {
		if i == 300 {
			t.Fatalf("no key reached the machine; got %q", received())
		}
		if _, err := typing.Write([]byte("k")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := typing.Write([]byte("root-via-serve\r")); err != nil {
		t.Fatal(err)
	}
	waitText(t, "the typed line at the machine", received, "root-via-serve\r")
	if _, err := machine.Write([]byte("Password: (seen by both)\r\n")); err != nil {
		t.Fatal(err)
	}
	waitText(t, "the machine's answer in the console", out.String, "Password: (seen by both)")
	waitText(t, "the machine's answer in the log", logged, "Password: (seen by both)")
	if _, err := typing.Write([]byte{serialterm.EscapeByte}); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 || !strings.Contains(errs.String(), "Detached.") {
			t.Fatalf("console: exit %d; stderr:\n%s", code, errs.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("Ctrl-] did not end metal console; stderr:\n%s", errs.String())
	}
	if strings.Contains(logged(), password) {
		t.Error("the console log holds the BMC password")
	}
}
