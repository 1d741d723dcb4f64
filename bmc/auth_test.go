package bmc_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
)

// TestRedfishAuthModes drives every verb against Redfish services that
// authenticate as real ones do: sessions (most BMCs), Basic auth only on
// every URL (sushy-tools with an auth file), no authentication
// (sushy-tools without one) and a SessionService that refuses logins. The
// client picks what works and says which it used.
func TestRedfishAuthModes(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		mode       string
		wantAuth   string
		wantReason string
	}{
		"sessions": {mode: virtual.AuthSessions, wantAuth: bmc.AuthSession},
		"basic only (sushy-tools with an auth file)": {mode: virtual.AuthBasicOnly, wantAuth: bmc.AuthBasic, wantReason: "no SessionService"},
		"no auth (sushy-tools without one)":          {mode: virtual.AuthNone, wantAuth: bmc.AuthBasic, wantReason: "no SessionService"},
		"sessions refused":                           {mode: virtual.AuthSessionsRefused, wantAuth: bmc.AuthBasic, wantReason: "creating a session failed (HTTP 405"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			log := testpeer.NewLog(t)
			sim := virtual.NewSim(virtual.SimOptions{Name: "rf-01"})
			url, _ := testpeer.VBMCWith(t, false, virtual.Options{Username: "admin", Password: testPassword, Auth: tc.mode, Log: log.Logger},
				virtual.MachineSpec{Name: "rf-01", Machine: sim, Serial: "S1", MACs: []string{"52:54:00:00:02:01"}})
			c, err := bmc.New(bmc.Config{
				Machine: "rf-01", Protocol: "redfish", Address: url, System: "rf-01",
				Username: "admin", Password: testPassword, Timeout: 5 * time.Second, PowerWait: 5 * time.Second,
			}, log.Logger)
			if err != nil {
				t.Fatal(err)
			}
			exercise(t, c, sim)
			if got := c.Auth(); got != tc.wantAuth {
				t.Errorf("Auth = %q, want %q", got, tc.wantAuth)
			}
			if got := c.AuthReason(); !strings.Contains(got, tc.wantReason) || (tc.wantReason == "") != (got == "") {
				t.Errorf("AuthReason = %q, want it to contain %q", got, tc.wantReason)
			}
			assertNoSecret(t, log.String())
		})
	}
}

// exercise runs status, on, bootdev pxe, cycle, inventory and off, and
// checks the simulated machine followed.
func exercise(t *testing.T, c *bmc.Client, sim *virtual.Sim) {
	t.Helper()
	ctx := context.Background()
	if p, err := c.PowerState(ctx); err != nil || p != bmc.PowerOff {
		t.Fatalf("status = %q, %v; want off", p, err)
	}
	if err := c.SetBootDevice(ctx, bmc.BootPXE, bmc.BootOptions{}); err != nil {
		t.Fatalf("bootdev pxe: %v", err)
	}
	if err := c.Power(ctx, bmc.ActionOn); err != nil {
		t.Fatalf("on: %v", err)
	}
	if err := c.Power(ctx, bmc.ActionCycle); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	inv, err := c.Inventory(ctx)
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	if inv.Serial != "S1" || len(inv.MACs) != 1 || inv.Power != bmc.PowerOn {
		t.Errorf("inventory = %+v", inv)
	}
	if err := c.Power(ctx, bmc.ActionOff); err != nil {
		t.Fatalf("off: %v", err)
	}
	if sim.Power() != virtual.PowerOff {
		t.Errorf("machine is %s after off", sim.Power())
	}
	boots := sim.Boots()
	if len(boots) != 2 || boots[0].Target != "Pxe" {
		t.Errorf("boots = %+v, want a PXE boot then the cycle's", boots)
	}
}

// TestRedfishBasicAuthWrongPassword: a Basic-auth-only service that
// refuses the password is a credentials error that says so, at once.
func TestRedfishBasicAuthWrongPassword(t *testing.T) {
	t.Parallel()
	log := testpeer.NewLog(t)
	url, _ := testpeer.VBMCWith(t, false, virtual.Options{Username: "admin", Password: "the-right-one", Auth: virtual.AuthBasicOnly, Log: log.Logger},
		virtual.MachineSpec{Name: "rf-02", Machine: virtual.NewSim(virtual.SimOptions{Name: "rf-02"})})
	c, err := bmc.New(bmc.Config{Machine: "rf-02", Protocol: "redfish", Address: url, Username: "admin", Password: testPassword, Timeout: 5 * time.Second}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.PowerState(context.Background())
	if !errors.Is(err, bmc.ErrCredentials) {
		t.Fatalf("err = %v, want ErrCredentials", err)
	}
	if !strings.Contains(err.Error(), "check the BMC username and password") || strings.Contains(err.Error(), "no Opener") {
		t.Errorf("error does not tell what to do: %v", err)
	}
	assertNoSecret(t, err.Error(), log.String())
}

// TestRedfishShortPasswordLogs: with a one-letter password, the trace log
// of every Redfish request (Basic auth headers included) shows neither the
// password nor its encoded forms, and messages are not mangled.
func TestRedfishShortPasswordLogs(t *testing.T) {
	t.Parallel()
	log := testpeer.NewLog(t)
	sim := virtual.NewSim(virtual.SimOptions{Name: "rf-03"})
	url, _ := testpeer.VBMCWith(t, false, virtual.Options{Username: "admin", Password: "x", Auth: virtual.AuthBasicOnly},
		virtual.MachineSpec{Name: "rf-03", Machine: sim, Serial: "S3"})
	c, err := bmc.New(bmc.Config{Machine: "rf-03", Protocol: "redfish", Address: url, Username: "admin", Password: "x", Timeout: 5 * time.Second}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inventory(context.Background()); err != nil {
		t.Fatal(err)
	}
	text := log.String()
	if !strings.Contains(text, "Authorization: Basic REDACTED") {
		t.Errorf("the trace log has no redacted request dump:\n%s", text)
	}
	if enc := base64.StdEncoding.EncodeToString([]byte("admin:x")); strings.Contains(text, enc) {
		t.Errorf("the Basic auth credentials leaked into the log")
	}
	if strings.Contains(text, "REDACTED"+"ecute") || !strings.Contains(text, "ComputerSystem") {
		t.Errorf("the log is mangled:\n%s", text)
	}

	// A failure message with the letter in it stays readable.
	c2, _ := bmc.New(bmc.Config{Machine: "rf-03", Protocol: "redfish", Address: "http://127.0.0.1:1", Username: "admin", Password: "x", Timeout: time.Second, Retries: 1}, nil)
	_, err = c2.PowerState(context.Background())
	if err == nil || strings.Contains(err.Error(), "REDACTED") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error = %v; want it intact", err)
	}
}

// TestRedfishAddressThatIsNotRedfish: a web server that is not a Redfish
// service (404 for /redfish/v1/, or HTML) is named as such, not as a BMC
// lacking a feature, and no retry hides it.
func TestRedfishAddressThatIsNotRedfish(t *testing.T) {
	t.Parallel()
	tests := map[string]http.HandlerFunc{
		"404": http.NotFound,
		"html": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>BMC web UI</body></html>"))
		},
	}
	for name, handler := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(handler)
			t.Cleanup(srv.Close)
			c, err := bmc.New(bmc.Config{Machine: "web", Protocol: "redfish", Address: srv.URL, Username: "admin", Password: testPassword, Timeout: 5 * time.Second}, testpeer.NewLog(t).Logger)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.PowerState(context.Background())
			if !errors.Is(err, bmc.ErrNotRedfish) || errors.Is(err, bmc.ErrUnsupported) {
				t.Fatalf("err = %v, want ErrNotRedfish", err)
			}
			if !strings.Contains(err.Error(), "probably not a Redfish service") {
				t.Errorf("error does not say what is wrong: %v", err)
			}
		})
	}
}
