package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/daemon/serial/serialtest"
	"github.com/metal-dev/metal/internal/serialterm"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/lab"
)

// TestLabConsoleThroughServe: while the lab's metal serve runs, `metal lab
// console` joins the VM's console through serve's console hub, the one
// the web console's terminal uses: a browser's WebSocket (here the API's,
// read-only for a reader of open reads) and the lab console show the
// same output, the lab console's keys reach the machine, and its session
// is on the machine's timeline. With serve gone it attaches to the VM's
// console socket itself and says so.
func TestLabConsoleThroughServe(t *testing.T) {
	apiAddr := freeTCPAddr(t)
	sockets := t.TempDir()
	name := applytest.Name(0)
	tty := serialtest.Serve(t, sockets, name, `echo "`+name+` login: (lab console test)"; exec cat`)
	l := newServeLab(t, 1, time.Second, testRollout,
		"--console-socket", filepath.Join(sockets, "{machine}.sock"), "--open-reads", "--api-listen", apiAddr)
	// A lab whose one VM is the fleet's machine, its state beside serve's.
	st := lab.State{Dir: l.dir, Site: l.site, VMs: []lab.VM{{Name: name, Console: tty.Path}}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, lab.StateFile), b, 0o644); err != nil {
		t.Fatal(err)
	}

	// A browser's terminal, watching.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+apiAddr+api.Prefix+"machines/"+name+"/console", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	browser := &syncbuf.Buffer{}
	go func() {
		for {
			typ, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				browser.Write(data)
			}
		}
	}()
	waitText(t, "the machine's banner in the browser", browser.String, "login: (lab console test)")

	keys, typing := io.Pipe()
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"lab", "console", "--dir", l.dir, name}, keys, &stdout, &stderr) }()
	waitText(t, "how the lab console went", stderr.String, "through metal serve's console hub")
	waitText(t, "the machine's banner in the lab console", stdout.String, "login: (lab console test)")
	if _, err := typing.Write([]byte("typed-in-lab-console\r")); err != nil {
		t.Fatal(err)
	}
	// The terminal's echo and cat's line, in both.
	twice := func(out func() string) func() string {
		return func() string {
			if strings.Count(out(), "typed-in-lab-console") >= 2 {
				return "echoed"
			}
			return out()
		}
	}
	waitText(t, "the echo in the lab console", twice(stdout.String), "echoed")
	waitText(t, "the echo in the browser", twice(browser.String), "echoed")
	if _, err := typing.Write([]byte{serialterm.EscapeByte}); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 0 {
		t.Fatalf("lab console: exit %d: %s", code, stderr.String())
	}
	if in := tty.Input(); in != "typed-in-lab-console\r" {
		t.Errorf("the machine received %q", in)
	}
	// The session is on the machine's timeline, with who opened it.
	sock := filepath.Join(l.dir, "state", daemon.LocalSocket)
	waitText(t, "the lab console's session in the events", func() string {
		evs, _ := client.New(sock).Events(ctx, inventory.EventQuery{Machine: name})
		var s strings.Builder
		for _, e := range evs {
			s.WriteString(e.Message + "\n")
		}
		return s.String()
	}, `on the local socket" (interactive) after`)

	// Without serve: QEMU's socket (here the pty's) itself.
	ws.Close(websocket.StatusNormalClosure, "")
	_ = l.serve.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, ok := client.Running(filepath.Join(l.dir, "state")); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("metal serve still answers 30 s after SIGTERM")
		}
	}
	keys, typing = io.Pipe()
	var alone, aloneErr syncbuf.Buffer
	go func() { done <- run([]string{"lab", "console", "--dir", l.dir, name}, keys, &alone, &aloneErr) }()
	waitText(t, "how the lab console went", aloneErr.String, "straight to QEMU's console socket")
	if _, err := typing.Write([]byte("alone\r")); err != nil {
		t.Fatal(err)
	}
	waitText(t, "the echo", alone.String, "alone")
	if _, err := typing.Write([]byte{serialterm.EscapeByte}); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 0 {
		t.Fatalf("lab console without serve: exit %d: %s", code, aloneErr.String())
	}
}
