package storeagent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/agentapi"
)

// The phone-home of the installed OS is recorded once, only with the
// current install's secret, from any address (no lease, no token: a
// cloud-init cannot send either).
func TestReadyPhoneHome(t *testing.T) {
	store, hs := setup(t)
	ctx := context.Background()
	armReady(t, store)
	post := func(mac, secret string) int {
		t.Helper()
		form := url.Values{"instance_id": {"metal-t1"}, "hostname": {"web-01"}}
		resp, err := http.Post(hs.URL+agentapi.ReadyPath(mac, secret), "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct{ mac, secret string }{{known.String(), "wrong"}, {other.String(), "s3cret"}, {unknown.String(), "s3cret"}} {
		if code := post(c.mac, c.secret); code != http.StatusForbidden {
			t.Errorf("phone-home of %s with secret %q: %d, want 403", c.mac, c.secret, code)
		}
	}
	if m, _ := store.Machine(ctx, "web-01"); !m.Ready.ReadyAt.IsZero() {
		t.Fatalf("ready recorded by a refused phone-home: %+v", m.Ready)
	}
	for i := 0; i < 2; i++ {
		if code := post(known.String(), "s3cret"); code != http.StatusNoContent {
			t.Fatalf("phone-home %d: %d, want 204", i, code)
		}
	}
	m, _ := store.Machine(ctx, "web-01")
	if !m.Ready.ReadyAt.Equal(now) || m.Ready.From != "127.0.0.1" {
		t.Errorf("readiness after the phone-home: %+v", m.Ready)
	}
	evs, _ := store.Events(ctx, inventory.EventQuery{Machine: "web-01"})
	n := 0
	for _, ev := range evs {
		if strings.Contains(ev.Message, "reported ready") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d ready events, want 1: %+v", n, evs)
	}
}

// The phone-home records the address it came from as net/http saw it: an
// OS that posts while its own address is still tentative sends from its
// link-local one, which is kept with its zone, not lost.
func TestReadyPhoneHomeFrom(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.7:40000", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:40000", "192.0.2.7"},
		{"[2001:db8:0:1::50]:40000", "2001:db8:0:1::50"},
		{"[fe80::5054:ff:fe12:3456%br-metal]:40000", "fe80::5054:ff:fe12:3456%br-metal"},
	} {
		t.Run(tc.remote, func(t *testing.T) {
			store, hs := setup(t)
			ctx := context.Background()
			armReady(t, store)
			r := httptest.NewRequest("POST", agentapi.ReadyPath(known.String(), "s3cret"), strings.NewReader("hostname=web-01"))
			r.RemoteAddr = tc.remote
			w := httptest.NewRecorder()
			hs.Config.Handler.ServeHTTP(w, r)
			if w.Code != http.StatusNoContent {
				t.Fatalf("phone-home: %d %s", w.Code, w.Body)
			}
			if m, _ := store.Machine(ctx, "web-01"); m.Ready.From != tc.want {
				t.Errorf("recorded from %q, want %q", m.Ready.From, tc.want)
			}
		})
	}
}

// armReady gives web-01 an install waiting for its OS's phone-home with
// the secret "s3cret", as an apply does once the image is written.
func armReady(t *testing.T, store inventory.Store) {
	t.Helper()
	sum := sha256.Sum256([]byte("s3cret"))
	if _, err := inventory.UpdateMachine(context.Background(), store, "web-01", func(m *inventory.Machine) error {
		m.Ready = &inventory.Readiness{TaskID: "t1", Check: "cloud-init", SecretSHA256: hex.EncodeToString(sum[:])}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
