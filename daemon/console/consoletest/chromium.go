// Package consoletest drives metal's web console in Debian's headless
// Chromium (chromedp) for tests: the console's own, and the daemon's end
// to end ones against a real `metal serve`.
package consoletest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/metal-dev/metal/internal/testenv"
)

// Browser starts Debian's headless Chromium with the flags that keep it
// off the network (DESIGN.md pitfalls) and a fresh profile, and returns
// its context; it is closed when the test ends. Without chromium the test
// is skipped.
func Browser(t *testing.T) context.Context {
	t.Helper()
	bin := testenv.Tool(t, "chromium", "chromium")
	// Not t.TempDir: Chromium's helpers may still be writing the profile
	// when the test ends; it is removed once the browser is gone.
	profile, err := os.MkdirTemp("", "metal-console-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx) // closes the browser and waits for it
		cancelTimeout()
		cancelBrowser()
		cancelAlloc()
		for range 20 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("could not remove the browser profile %s", profile)
	})
	if err := chromedp.Run(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// Run runs actions in the browser, failing the test with what on error.
func Run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Screenshot saves the page as name in the test's artifact directory
// (kept with `go test -artifacts -outputdir DIR`).
func Screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var png []byte
	Run(t, ctx, "screenshot "+name, chromedp.FullScreenshot(&png, 100))
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// Post sends a form from inside the page, as a forged or stale form
// would, and returns the status.
func Post(t *testing.T, ctx context.Context, path, body string) int {
	t.Helper()
	var status int
	js := `fetch(` + jsString(path) + `, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: ` + jsString(body) + `, redirect: "manual"}).then(r => r.status)`
	Run(t, ctx, "post "+path, chromedp.Evaluate(js, &status, func(p *cdpruntime.EvaluateParams) *cdpruntime.EvaluateParams { return p.WithAwaitPromise(true) }))
	return status
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// LiveText reads the text of the element sel in one step inside the page.
// chromedp.Text looks a node up and then reads it, and a live page may
// swap the node in between (its stream re-renders); this cannot miss.
func LiveText(sel string, text *string) chromedp.Action {
	return chromedp.Evaluate(`(() => { const e = document.querySelector(`+jsString(sel)+`); return e ? e.innerText : ""; })()`, text)
}
