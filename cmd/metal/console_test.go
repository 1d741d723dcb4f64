package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/ipmisim/ipmisimtest"
	"github.com/metal-dev/metal/internal/serialterm"
	"github.com/metal-dev/metal/internal/syncbuf"
)

// TestConsoleOverSOL: `metal console` attaches the terminal to a machine's
// serial port behind OpenIPMI's ipmi_sim (its SOL wired to a
// pseudo-terminal whose other end the test holds, as the machine): the
// machine's output is printed, keys reach it, Ctrl-] leaves cleanly and
// frees the console for the next session. A Redfish machine is refused
// with the reason.
func TestConsoleOverSOL(t *testing.T) {
	const password = "sol-pw-8812"
	dir := t.TempDir()
	addr, machine := ipmisimtest.StartSOL(t, "admin", password)
	sitePath := filepath.Join(dir, "site.hcl")
	siteHCL := fmt.Sprintf(`
site "sol" {}
variable "pw" { sensitive = true }
network "lab" {
  interface = "lo"
  subnet    = "192.0.2.0/24"
}
machine "web-01" {
  mac = "52:54:00:00:00:21"
  bmc {
    protocol = "ipmi"
    address  = "%s"
    username = "admin"
    password = var.pw
  }
}
machine "web-02" {
  mac = "52:54:00:00:00:22"
  bmc {
    protocol = "redfish"
    address  = "http://127.0.0.1:1"
    username = "admin"
    password = var.pw
  }
}
`, addr)
	if err := os.WriteFile(sitePath, []byte(siteHCL), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("METAL_VAR_pw", password)

	received := ptyReader(machine)
	for session := 1; session <= 2; session++ {
		keys, typing := io.Pipe()
		var stdout, stderr syncbuf.Buffer
		done := make(chan int, 1)
		go func() { done <- run([]string{"console", "--site", sitePath, "web-01"}, keys, &stdout, &stderr) }()
		waitText(t, "the banner", stderr.String, "Connected to web-01's serial console. Ctrl-] leaves.")
		banner := fmt.Sprintf("web-01 login (session %d): ", session)
		if _, err := machine.Write([]byte(banner)); err != nil {
			t.Fatal(err)
		}
		waitText(t, "the machine's output", stdout.String, banner)
		// Two packets, each waited for: ipmi_sim keeps the sequence number
		// it last acknowledged across sessions and drops a new session's
		// first packet as a duplicate when it bears the same number
		// (lanserv/sol.c; real BMCs start afresh). ipmitool numbers each
		// session's packets from 1, so every session here ends on 2.
		for _, typed := range []string{fmt.Sprintf("root%d\r", session), fmt.Sprintf("~.%d\r", session)} {
			if _, err := typing.Write([]byte(typed)); err != nil {
				t.Fatal(err)
			}
			waitText(t, "the keys at the machine", received, typed)
		}
		if _, err := typing.Write([]byte{serialterm.EscapeByte}); err != nil {
			t.Fatal(err)
		}
		select {
		case code := <-done:
			if code != 0 || !strings.Contains(stderr.String(), "Detached.") {
				t.Fatalf("session %d: exit %d; stderr:\n%s", session, code, stderr.String())
			}
		case <-time.After(time.Minute):
			t.Fatalf("session %d: Ctrl-] did not end metal console; stderr:\n%s", session, stderr.String())
		}
		typing.Close()
		if strings.Contains(stdout.String()+stderr.String(), password) {
			t.Fatalf("output shows the BMC password")
		}
	}

	code, _, stderr := metal(t, nil, "console", "--site", sitePath, "web-02")
	if code != 1 || !strings.Contains(stderr, "IPMI Serial-over-LAN") || !strings.Contains(stderr, "web-02") {
		t.Errorf("console of a Redfish machine: exit %d, stderr:\n%s", code, stderr)
	}
}

// ptyReader returns a function giving what the machine has received so
// far, read from its end of the line in the background.
func ptyReader(f *os.File) func() string {
	var got syncbuf.Buffer
	go func() { _, _ = io.Copy(&got, f) }()
	return got.String
}

// waitText polls text until it holds want; it fails the test after a
// minute, whatever the machine's speed, with what it saw.
func waitText(t *testing.T, what string, text func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !bytes.Contains([]byte(text()), []byte(want)) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s (%q) in a minute; got %q", what, want, text())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
