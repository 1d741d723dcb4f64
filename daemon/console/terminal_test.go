package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/api/apitest"
	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/daemon/console/consoletest"
	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/daemon/serial/serialtest"
	"github.com/metal-dev/metal/inventory"
)

// TestTerminalInChromium: the machine's serial console in the browser's
// terminal (xterm.js over a WebSocket), behind the same unix-socket
// console stream the lab's QEMU serves: a real VM (QEMU, a Debian kernel
// and an initramfs that answers each line it reads), and a real process
// on a pseudo-terminal (sh, then cat). Either way the console's line
// discipline echoes what is typed and the machine prints it again. A
// read token watches and cannot type, not even by sending on the socket
// by hand; an operator types and sees the echo; every session is
// recorded.
func TestTerminalInChromium(t *testing.T) {
	for name, tc := range map[string]struct {
		// machine starts web-01's console on dir/web-01.sock: what it
		// prints first, and what reached its serial input so far.
		machine func(t *testing.T, dir string, hub *serial.Hub) (banner string, received func() string)
	}{
		"qemu": {machine: func(t *testing.T, dir string, hub *serial.Hub) (string, func() string) {
			vm := serialtest.QEMU(t, dir, "web-01")
			// A session of the test's own from power-on, as an operator's
			// terminal left open: the hub keeps the console's scrollback,
			// so the browsers joining later see the boot.
			s, err := hub.Attach(context.Background(), "web-01")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			if err := waitOutput(s, vm.Marker, 5*time.Minute); err != nil {
				t.Fatalf("web-01 did not boot: %v", err)
			}
			return vm.Marker, vm.Received
		}},
		"pty": {machine: func(t *testing.T, dir string, _ *serial.Hub) (string, func() string) {
			tty := serialtest.Serve(t, dir, "web-01", `echo "web-01 login: (metal serial test)"; exec cat`)
			return "web-01 login: (metal serial test)", tty.Input
		}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			hub := serial.NewHub(serial.UnixSockets(dir + "/{machine}.sock"))
			banner, received := tc.machine(t, dir, hub)
			terminalInChromium(t, name, hub, banner, received)
		})
	}
}

// waitOutput reads a session's output until it holds want.
func waitOutput(s *serial.Session, want string, limit time.Duration) error {
	var got strings.Builder
	timeout := time.After(limit)
	for !strings.Contains(got.String(), want) {
		select {
		case b, ok := <-s.Output():
			if !ok {
				return fmt.Errorf("the console ended before %q", want)
			}
			got.Write(b)
		case <-timeout:
			return fmt.Errorf("no %q in %v", want, limit)
		}
	}
	go func() {
		for range s.Output() { // keep reading, or the hub drops its output
		}
	}()
	return nil
}

func terminalInChromium(t *testing.T, name string, hub *serial.Hub, banner string, received func() string) {
	l := serve(t, false, func(o *console.Options) { o.Serial = hub })
	viewer := apitest.Token(t, l.Store, "viewer", api.RoleRead)
	ctx := consoletest.Browser(t)

	rows := `document.querySelector("#terminal .xterm-rows") ? document.querySelector("#terminal .xterm-rows").innerText : ""`
	waitText := func(s string) chromedp.Action {
		return chromedp.Poll(`(`+rows+`).includes(`+"`"+s+"`"+`)`, nil, chromedp.WithPollingTimeout(20*time.Second))
	}

	// A read token: the console's output, read-only.
	var mode string
	consoletest.Run(t, ctx, "read-only terminal",
		chromedp.Navigate(l.url+console.Prefix+"machines/web-01"),
		chromedp.WaitVisible(`#token`),
		chromedp.SendKeys(`#token`, viewer),
		chromedp.Click(`#login`),
		chromedp.Click(`#serial-console`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#terminal[data-mode="read-only"]`),
		waitText(banner),
		chromedp.Focus(`#terminal .xterm-helper-textarea`),
		chromedp.SendKeys(`#terminal .xterm-helper-textarea`, "typed-by-reader\r"),
		// And by hand on a socket of its own, as a script would.
		chromedp.Evaluate(`new Promise(done => {
			const ws = new WebSocket("ws://" + location.host + document.getElementById("terminal").dataset.socket);
			ws.binaryType = "arraybuffer";
			ws.onmessage = e => { if (typeof e.data === "string" && JSON.parse(e.data).mode) { ws.send(new TextEncoder().encode("forged-by-reader\r")); setTimeout(() => { ws.close(); done(true) }, 300) } };
		})`, nil, awaitPromise),
		chromedp.Evaluate(`document.getElementById("terminal").dataset.mode`, &mode),
	)
	consoletest.Screenshot(t, ctx, "terminal-"+name+"-read-only.png")
	if mode != "read-only" {
		t.Errorf("terminal mode %q with a read token", mode)
	}

	// An operator logs in and types; the machine echoes.
	consoletest.Run(t, ctx, "log in",
		chromedp.Click(`.who button`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#token`),
		chromedp.Navigate(l.url+console.Prefix+"login?next="+console.Prefix+"machines/web-01/terminal"),
		chromedp.WaitVisible(`#token`),
		chromedp.SendKeys(`#token`, l.token),
		chromedp.Click(`#login`),
		chromedp.WaitVisible(`#terminal[data-mode="interactive"]`),
		waitText(banner),
	)
	consoletest.Run(t, ctx, "type",
		chromedp.Focus(`#terminal .xterm-helper-textarea`),
		input.InsertText("hello from the browser"),
		enter(),
		chromedp.Poll(`(`+rows+`).split("hello from the browser").length - 1 >= 2`, nil, chromedp.WithPollingTimeout(20*time.Second)),
	)
	consoletest.Screenshot(t, ctx, "terminal-"+name+"-interactive.png")
	if in := received(); !strings.Contains(in, "hello from the browser") || strings.Contains(in, "-by-reader") {
		t.Errorf("the machine received %q: want the operator's keys and none of the reader's", in)
	}

	// Leaving closes the session; both sessions are on the timeline.
	consoletest.Run(t, ctx, "leave", chromedp.Navigate(l.url+console.Prefix+"machines/web-01"), chromedp.WaitVisible(`#machine-live`))
	var evs []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		all, err := l.Store.Events(context.Background(), inventory.EventQuery{Machine: "web-01"})
		if err != nil {
			t.Fatal(err)
		}
		evs = evs[:0]
		for _, e := range all {
			if e.Kind == api.EventConsole {
				evs = append(evs, e.Message)
			}
		}
		if len(evs) >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	joined := strings.Join(evs, "\n")
	for _, s := range []string{
		`serial console opened by "viewer" (read-only)`,
		"bytes refused (read-only)",
		`serial console opened by "ops" (interactive)`,
		`serial console closed by "ops" (interactive) after`,
	} {
		if !strings.Contains(joined, s) {
			t.Errorf("console events lack %q:\n%s", s, joined)
		}
	}
}

func awaitPromise(p *cdpruntime.EvaluateParams) *cdpruntime.EvaluateParams {
	return p.WithAwaitPromise(true)
}

// enter presses Enter once. chromedp.KeyEvent sends the key's text as a
// character event too, which xterm.js takes as a second Enter.
func enter() chromedp.Action {
	return chromedp.Tasks{
		input.DispatchKeyEvent(input.KeyRawDown).WithKey("Enter").WithCode("Enter").WithWindowsVirtualKeyCode(13).WithNativeVirtualKeyCode(13),
		input.DispatchKeyEvent(input.KeyUp).WithKey("Enter").WithCode("Enter").WithWindowsVirtualKeyCode(13).WithNativeVirtualKeyCode(13),
	}
}
