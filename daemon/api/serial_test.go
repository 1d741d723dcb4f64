package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/api/apitest"
	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/daemon/serial/serialtest"
)

// TestConsoleRoute: the API's console WebSocket is interactive with an
// operator's token, read-only with a read token and for a reader of open
// reads, whose keys never reach the machine.
func TestConsoleRoute(t *testing.T) {
	l := apitest.New(t, "testdata/site.hcl")
	dir := t.TempDir()
	tty := serialtest.Serve(t, dir, "web-01", `echo ready; exec cat`)
	operator := apitest.Token(t, l.Store, "ops", api.RoleOperate)
	reader := apitest.Token(t, l.Store, "viewer", api.RoleRead)
	srv := httptest.NewServer(api.New(api.Options{Store: l.Store, Tokens: api.NewTokens(l.Store, nil, nil), OpenReads: true,
		Serial: serial.NewHub(serial.UnixSockets(dir + "/{machine}.sock"))}))
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/machines/web-01/console"

	session := func(header http.Header, keys string) (mode, out string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		var hello api.Console
		if _, data, err := c.Read(ctx); err != nil || json.Unmarshal(data, &hello) != nil {
			t.Fatalf("first message: %s %v", data, err)
		}
		var got bytes.Buffer
		until := func(done func(string) bool) {
			for !done(got.String()) {
				_, data, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("read: %v (so far %q)", err, got.String())
				}
				got.Write(data)
			}
		}
		// The machine is up (cat reads the terminal) before keys are sent.
		until(func(s string) bool { return strings.Contains(s, "ready") })
		if err := c.Write(ctx, websocket.MessageBinary, []byte(keys)); err != nil {
			t.Fatal(err)
		}
		if hello.Mode == api.ModeInteractive {
			// The terminal echoes the line, then cat prints it.
			until(func(s string) bool { return strings.Count(s, strings.TrimSuffix(keys, "\r")) >= 2 })
		}
		c.Close(websocket.StatusNormalClosure, "")
		return hello.Mode, got.String()
	}
	if mode, _ := session(nil, "reader-keys\r"); mode != api.ModeReadOnly {
		t.Errorf("without a token: mode %q", mode)
	}
	if mode, _ := session(http.Header{"Authorization": {"Bearer " + reader}}, "read-token-keys\r"); mode != api.ModeReadOnly {
		t.Errorf("with a read token: mode %q", mode)
	}
	if mode, _ := session(http.Header{"Authorization": {"Bearer " + operator}}, "operator-keys\r"); mode != api.ModeInteractive {
		t.Errorf("with a token: mode %q", mode)
	}
	if in := tty.Input(); in != "operator-keys\r" {
		t.Errorf("the machine got %q, want only the operator's keys", in)
	}
	resp, err := http.Get(srv.URL + "/api/v1/machines/web-01/console")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a plain GET: status %d, want a refusal to upgrade", resp.StatusCode)
	}
}
