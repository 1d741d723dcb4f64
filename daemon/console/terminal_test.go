package console_test

import (
	"context"
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
// console stream the lab's QEMU serves, with a real process on a
// pseudo-terminal at its end (sh, then cat: the terminal's line
// discipline echoes what is typed, cat prints it again). A read token
// watches and cannot type, not even by sending on the socket by hand; an
// operator types and sees the echo; every session is recorded.
func TestTerminalInChromium(t *testing.T) {
	dir := t.TempDir()
	tty := serialtest.Serve(t, dir, "web-01", `echo "web-01 login: (metal serial test)"; exec cat`)
	hub := serial.NewHub(serial.UnixSockets(dir + "/{machine}.sock"))
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
		waitText("web-01 login: (metal serial test)"),
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
	consoletest.Screenshot(t, ctx, "terminal-read-only.png")
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
		waitText("web-01 login: (metal serial test)"),
	)
	consoletest.Run(t, ctx, "type",
		chromedp.Focus(`#terminal .xterm-helper-textarea`),
		input.InsertText("hello from the browser"),
		enter(),
		chromedp.Poll(`(`+rows+`).split("hello from the browser").length - 1 >= 2`, nil, chromedp.WithPollingTimeout(20*time.Second)),
	)
	consoletest.Screenshot(t, ctx, "terminal-interactive.png")
	if in := tty.Input(); in != "hello from the browser\r" {
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
