package console_test

import (
	"net/url"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/daemon/console/consoletest"
	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/daemon/serial/serialtest"
)

// TestNoRequestLeavesMetal: every page, in dark mode and at phone width
// too, asks metal alone for everything it loads (scripts, styles, the
// terminal's xterm.js, streams and sockets); Chromium records each
// request.
func TestNoRequestLeavesMetal(t *testing.T) {
	dir := t.TempDir()
	serialtest.Serve(t, dir, "web-01", `echo up; exec cat`)
	l := serve(t, true, func(o *console.Options) { o.Serial = serial.NewHub(serial.UnixSockets(dir + "/{machine}.sock")) })
	ctx := consoletest.Browser(t)
	var mu sync.Mutex
	var urls []string
	chromedp.ListenTarget(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			urls = append(urls, e.Request.URL)
		case *network.EventWebSocketCreated:
			urls = append(urls, e.URL)
		}
	})
	pages := []string{"", "racks", "machines/web-01", "machines/web-01/terminal", "rollout", "plan", "machines/db-01/adopt"}
	visit := func(name string) {
		for _, p := range pages {
			consoletest.Run(t, ctx, "visit "+p, chromedp.Navigate(l.url+console.Prefix+p), chromedp.WaitReady(`footer`))
		}
		consoletest.Run(t, ctx, "terminal", chromedp.Navigate(l.url+console.Prefix+"machines/web-01/terminal"), chromedp.WaitVisible(`#terminal[data-mode="read-only"]`))
		consoletest.Screenshot(t, ctx, name+".png")
	}
	consoletest.Run(t, ctx, "record", network.Enable())
	visit("terminal-light")
	consoletest.Run(t, ctx, "dark", emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}))
	var bg string
	consoletest.Run(t, ctx, "dark racks", chromedp.Navigate(l.url+console.Prefix+"racks"), chromedp.WaitReady(`footer`),
		chromedp.Evaluate(`getComputedStyle(document.body).backgroundColor`, &bg))
	if bg != "rgb(21, 23, 26)" {
		t.Errorf("dark mode background %s, want the dark theme's", bg)
	}
	consoletest.Screenshot(t, ctx, "racks-dark.png")
	consoletest.Run(t, ctx, "phone", emulation.SetDeviceMetricsOverride(390, 844, 3, true))
	visit("terminal-phone-dark")

	base, _ := url.Parse(l.url)
	mu.Lock()
	defer mu.Unlock()
	if len(urls) < len(pages) {
		t.Fatalf("only %d requests recorded", len(urls))
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Host != base.Host {
			t.Errorf("a request left metal: %s", raw)
		}
	}
	t.Logf("%d requests, all to metal", len(urls))
}
