package http

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/storepolicy"
)

// TestSameIntentSeesEveryField changes each field of pxe.Intent in turn:
// every change must make the cached script stale. A field added to
// pxe.Intent without a case here fails the test.
func TestSameIntentSeesEveryField(t *testing.T) {
	base := pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Initrd: []string{"/i"}, Cmdline: "quiet", Token: "t"}
	changes := map[string]func(*pxe.Intent){
		"Action":      func(in *pxe.Intent) { in.Action = pxe.ActionLocal },
		"Kernel":      func(in *pxe.Intent) { in.Kernel = "/k2" },
		"Initrd":      func(in *pxe.Intent) { in.Initrd = []string{"/i", "/j"} },
		"Cmdline":     func(in *pxe.Intent) { in.Cmdline = "" },
		"Token":       func(in *pxe.Intent) { in.Token = "u" },
		"AgentSecret": func(in *pxe.Intent) { in.AgentSecret = "s" },
		"Spent":       func(in *pxe.Intent) { in.Spent = true },
	}
	typ := reflect.TypeOf(pxe.Intent{})
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		change, ok := changes[name]
		if !ok {
			t.Errorf("pxe.Intent.%s is not compared: add it to sameIntent and to this test", name)
			continue
		}
		other := base
		other.Initrd = append([]string(nil), base.Initrd...)
		change(&other)
		if sameIntent(base, other) {
			t.Errorf("intents differing in %s compare equal", name)
		}
	}
	if !sameIntent(base, pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Initrd: []string{"/i"}, Cmdline: "quiet", Token: "t"}) {
		t.Error("equal intents compare different")
	}
}

func TestScriptCache(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	in := pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Initrd: []string{"/i"}}
	base, _ := url.Parse("http://192.0.2.1:8080")
	var c scriptCache
	if _, ok := c.get(mac, in, "web-01", base); ok {
		t.Fatal("hit in an empty cache")
	}
	c.put(mac, in, "web-01", base, []byte("script"))
	in.Initrd[0] = "/changed-by-the-caller" // the cache keeps its own copy
	v6, _ := url.Parse("http://[2001:db8::1]:8080")
	tests := map[string]struct {
		intent pxe.Intent
		name   string
		base   *url.URL
		want   string
	}{
		"same":          {intent: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Initrd: []string{"/i"}}, name: "web-01", base: base, want: "script"},
		"equal base":    {intent: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Initrd: []string{"/i"}}, name: "web-01", base: &url.URL{Scheme: "http", Host: "192.0.2.1:8080"}, want: "script"},
		"renamed":       {intent: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Initrd: []string{"/i"}}, name: "web-02", base: base},
		"over IPv6":     {intent: pxe.Intent{Action: pxe.ActionInstall, Kernel: "/k", Initrd: []string{"/i"}}, name: "web-01", base: v6},
		"intent change": {intent: pxe.Intent{Action: pxe.ActionLocal}, name: "web-01", base: base},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, _ := c.get(mac, tc.intent, tc.name, tc.base)
			if diff := cmp.Diff(tc.want, string(got.body)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	// Invented MACs never grow it past its bound.
	for i := range maxCachedScripts + 10 {
		c.put(net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}, in, fmt.Sprint(i), base, nil)
	}
	if n := len(c.m); n > maxCachedScripts {
		t.Errorf("%d cached scripts, bound %d", n, maxCachedScripts)
	}
}

// TestScriptFollowsStore serves a machine's script from the store's boot
// policy on a bbolt store, as metal serve does, then changes the machine's
// intent and its name: the next scripts show each change (a cached script
// is never served for a record that changed).
func TestScriptFollowsStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := backend.Open(ctx, "file://"+filepath.Join(t.TempDir(), "state.db"), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m, err := store.PutMachine(ctx, inventory.Machine{Name: "web-01", MAC: macLocal, State: inventory.StateReady,
		Intent: inventory.BootIntent{Action: inventory.BootLocal}})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := storepolicy.New(ctx, store, storepolicy.Options{TokenKey: []byte("key"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go policy.Run(ctx)
	<-policy.Synced()
	srv, err := New(Config{Policy: policy, Leases: leases{macLocal: net.IPv4(127, 0, 0, 1)}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	script := func() string {
		t.Helper()
		got, _ := get(t, clientFrom("127.0.0.1"), ts.URL+"/ipxe/"+macLocal, nil)
		if got.Status != 200 {
			t.Fatalf("status %d: %s", got.Status, got.Body)
		}
		return got.Body
	}
	// until waits for the policy's watch to bring the store's change.
	until := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := script()
			if strings.Contains(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("script never showed %q; last:\n%s", want, got)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	until("web-01 " + macLocal + " boots from local disk")
	script() // served from the cache now

	m.Intent = inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/files/k", Initrds: []string{"/files/i"}}
	if m, err = store.PutMachine(ctx, m); err != nil {
		t.Fatal(err)
	}
	until("kernel /files/k initrd=i")
	m.Intent.Initrds = []string{"/files/i2"}
	if m, err = store.PutMachine(ctx, m); err != nil {
		t.Fatal(err)
	}
	until("initrd --name i2 /files/i2")
	if err := store.DeleteMachine(ctx, m.Name, m.Revision); err != nil {
		t.Fatal(err)
	}
	m.Name, m.Revision = "web-99", 0
	if _, err := store.PutMachine(ctx, m); err != nil {
		t.Fatal(err)
	}
	until("web-99 " + macLocal)
}
