package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/api/apitest"
	"github.com/metal-dev/metal/inventory"
)

// documentedWrites lists every route of openapi.yaml whose method is not
// GET (the ones that change state), with the path's parameters filled in.
func documentedWrites(t *testing.T, runID string) []call {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	var out []call
	for path, methods := range doc.Paths {
		for method := range methods {
			m := strings.ToUpper(method)
			if m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions || method == "parameters" {
				continue
			}
			out = append(out, call{method: m, path: fillPath(path, runID), body: writeBody(path)})
		}
	}
	if len(out) == 0 {
		t.Fatal("openapi.yaml documents no state-changing route; the test would check nothing")
	}
	return out
}

// writeBody is a request body the route would carry out with a valid
// token, so a refusal is the token's doing and not the body's.
func writeBody(path string) string {
	switch path {
	case "/api/v1/actions":
		return `{"action":"power-cycle","machine":"web-01","reason":"auth test"}`
	case "/api/v1/tokens":
		return `{"role":"read"}`
	}
	return `{}`
}

// fillPath puts names that exist into a route's pattern: the machine
// web-01, the lab's run, the token "spare".
func fillPath(pattern, runID string) string {
	name := "web-01"
	if strings.HasPrefix(pattern, "/api/v1/tokens/") {
		name = "spare"
	}
	return strings.NewReplacer("{name}", name, "{id}", runID).Replace(pattern)
}

// TestEveryWriteNeedsAValidToken: every state-changing route of
// openapi.yaml, and every other method on every documented path, is
// refused without a valid token, whether reads are open or not, however
// the credential is sent; nothing is carried out and the store does not
// change. With a valid admin token, the documented ones succeed.
func TestEveryWriteNeedsAValidToken(t *testing.T) {
	for _, openReads := range []bool{false, true} {
		f2 := serveWithTokens(t, openReads, nil)
		live := apitest.Token(t, f2.lab.Store, "ops", api.RoleAdmin)
		apitest.Token(t, f2.lab.Store, "spare", api.RoleRead)
		revoked := apitest.Token(t, f2.lab.Store, "leaver", api.RoleAdmin)
		// Known to work before it is revoked, so its refusal below is the
		// revocation's doing.
		if code, body := f2.do(t, call{method: http.MethodGet, path: "/api/v1/whoami", token: revoked}); code != http.StatusOK {
			t.Fatalf("whoami with the token before revoking it: %d %s", code, body)
		}
		if err := f2.lab.Store.DeleteAPIToken(context.Background(), "leaver"); err != nil {
			t.Fatal(err)
		}

		writes := documentedWrites(t, f2.lab.RunID)
		var undocumented []call
		for _, r := range api.Routes() {
			path := fillPath(r.Pattern, f2.lab.RunID)
			for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
				if !slices.ContainsFunc(api.Routes(), func(o api.Route) bool { return o.Pattern == r.Pattern && o.Method == m }) {
					undocumented = append(undocumented, call{method: m, path: path, body: writeBody(r.Pattern)})
				}
			}
		}

		creds := map[string]func(*call){
			"no token":           func(c *call) {},
			"garbage":            func(c *call) { c.token = "metal_garbage" },
			"revoked":            func(c *call) { c.token = revoked },
			"token's name":       func(c *call) { c.token = "ops" },
			"truncated":          func(c *call) { c.token = live[:len(live)-1] },
			"without its prefix": func(c *call) { c.token = strings.TrimPrefix(live, "metal_") },
			"basic auth": func(c *call) {
				c.header = map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:"+live))}
			},
			"in a cookie": func(c *call) { c.header = map[string]string{"Cookie": "token=" + live} },
			"in the query": func(c *call) {
				c.path += "?token=" + live
			},
			"other header": func(c *call) { c.header = map[string]string{"X-Api-Token": live} },
		}
		before := storeDigest(t, f2)
		for name, cred := range creds {
			for _, w := range writes {
				c := w
				cred(&c)
				if code, body := f2.do(t, c); code != http.StatusUnauthorized {
					t.Errorf("open reads %v, %s: %s %s answered %d %s, want 401", openReads, name, c.method, c.path, code, body)
				}
			}
			for _, w := range undocumented {
				c := w
				cred(&c)
				if code, body := f2.do(t, c); code != http.StatusUnauthorized && code != http.StatusMethodNotAllowed {
					t.Errorf("open reads %v, %s: %s %s answered %d %s, want 401 or 405", openReads, name, c.method, c.path, code, body)
				}
			}
		}
		if calls := f2.actions.Calls(); len(calls) != 0 {
			t.Errorf("open reads %v: actions carried out without a valid token: %v", openReads, calls)
		}
		if after := storeDigest(t, f2); after != before {
			t.Errorf("open reads %v: refused calls changed the store", openReads)
		}
		// The control: the same calls with the live token are carried out.
		for _, w := range writes {
			c := w
			c.token = live
			if code, body := f2.do(t, c); code/100 != 2 {
				t.Errorf("open reads %v: %s %s with a valid token answered %d %s", openReads, c.method, c.path, code, body)
			}
		}
		if len(f2.actions.Calls()) == 0 {
			t.Errorf("open reads %v: a valid token carried nothing out", openReads)
		}
	}
}

// TestRoles: every route answers a token whose role is too weak with 403
// and a message naming the role it needs, carrying nothing out; a token
// with the role gets through.
func TestRoles(t *testing.T) {
	f := serveWithTokens(t, false, nil)
	secrets := map[api.Role]string{}
	for _, r := range api.Roles() {
		secrets[r] = apitest.Token(t, f.lab.Store, string(r)+"-token", r)
	}
	for _, route := range api.Routes() {
		for _, role := range api.Roles() {
			f.lab.Store.DeleteAPIToken(context.Background(), "spare")
			apitest.Token(t, f.lab.Store, "spare", api.RoleRead) // what DELETE revokes
			c := call{method: route.Method, path: fillPath(route.Pattern, f.lab.RunID), token: secrets[role], body: writeBody(route.Pattern)}
			if route.Method == http.MethodGet {
				c.body = ""
			}
			before := storeDigest(t, f)
			calls := len(f.actions.Calls())
			code, body := f.do(t, c)
			if !role.Allows(route.Role) {
				if code != http.StatusForbidden || !strings.Contains(string(body), "needs role "+string(route.Role)) {
					t.Errorf("%s %s with a %s token: %d %s; want 403 naming role %s", c.method, c.path, role, code, body, route.Role)
				}
				if storeDigest(t, f) != before || len(f.actions.Calls()) != calls {
					t.Errorf("%s %s with a %s token changed something", c.method, c.path, role)
				}
				continue
			}
			if route.Pattern == "/api/v1/machines/{name}/console" {
				// A WebSocket: a plain GET that passed the gate is
				// answered by the route itself (TestConsoleRoute).
				if code == http.StatusUnauthorized || code == http.StatusForbidden {
					t.Errorf("%s %s with a %s token: %d %s; want it past the token check", c.method, c.path, role, code, body)
				}
				continue
			}
			if code/100 != 2 {
				t.Errorf("%s %s with a %s token: %d %s; want it carried out", c.method, c.path, role, code, body)
			}
		}
	}
}

// TestTokenExpiresAndRevokes: an expired token is refused from the first
// request after its expiry, a revoked one from the first after the revoke,
// with 401 saying which.
func TestTokenExpiresAndRevokes(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := serveWithTokens(t, false, clock)
	tokens := api.NewTokens(f.lab.Store, clock, nil)
	short, err := tokens.Create(context.Background(), api.NewToken{Name: "short", Role: api.RoleOperate, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	long := apitest.Token(t, f.lab.Store, "long", api.RoleOperate)
	whoami := func(secret string) (int, string) {
		code, body := f.do(t, call{method: http.MethodGet, path: "/api/v1/whoami", token: secret})
		return code, string(body)
	}
	if code, body := whoami(short.Secret); code != http.StatusOK {
		t.Fatalf("fresh token: %d %s", code, body)
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	if code, body := whoami(short.Secret); code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("expired token: %d %s; want 401 saying it expired", code, body)
	}
	if code, body := whoami(long); code != http.StatusOK {
		t.Fatalf("token without expiry: %d %s", code, body)
	}
	if err := tokens.Revoke(context.Background(), "long"); err != nil {
		t.Fatal(err)
	}
	if code, body := whoami(long); code != http.StatusUnauthorized || !strings.Contains(body, "not valid") {
		t.Errorf("revoked token: %d %s; want 401", code, body)
	}
}

// serveWithTokens serves the API over a seeded store, checking tokens of
// that store with clock (nil: time.Now).
func serveWithTokens(t *testing.T, openReads bool, clock func() time.Time) *fixture {
	t.Helper()
	lab := apitest.New(t, "testdata/site.hcl")
	lab.Seed(t)
	acts := &apitest.Actions{Store: lab.Store}
	h := api.New(api.Options{Store: lab.Store, Actions: acts, Planner: apitest.Planner{Site: lab.Site}, Tokens: api.NewTokens(lab.Store, clock, nil), OpenReads: openReads})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{lab: lab, actions: acts, url: srv.URL}
}

// storeDigest is every machine, event and run, as JSON.
func storeDigest(t *testing.T, f *fixture) string {
	t.Helper()
	ctx := context.Background()
	ms, _, err := f.lab.Store.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := f.lab.Store.Events(ctx, inventory.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	runs, err := f.lab.Store.ApplyRuns(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal([]any{ms, evs, runs})
	return string(b)
}

// TestTokensStoredHashed: the store holds, for each token, a salt and
// SHA-256 of salt and secret, and neither the secret nor any part of its
// random text.
func TestTokensStoredHashed(t *testing.T) {
	t.Parallel()
	lab := apitest.New(t, "testdata/site.hcl")
	secrets := map[string]string{}
	for _, name := range []string{"alice", "bob", "ci"} {
		secrets[name] = apitest.Token(t, lab.Store, name, api.RoleRead)
	}
	all, err := lab.Store.APITokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tok := range all {
		secret, ok := secrets[tok.Name]
		if !ok {
			t.Fatalf("token for unknown name %q", tok.Name)
		}
		if len(tok.Salt) < 16 {
			t.Errorf("%s: salt of %d bytes", tok.Name, len(tok.Salt))
		}
		sum := sha256.Sum256(append(append([]byte(nil), tok.Salt...), secret...))
		if !bytes.Equal(tok.Hash, sum[:]) {
			t.Errorf("%s: stored hash is not sha256(salt + secret)", tok.Name)
		}
		if seen[string(tok.Salt)] {
			t.Errorf("%s: salt reused", tok.Name)
		}
		seen[string(tok.Salt)] = true
	}
	if len(seen) != len(secrets) {
		t.Errorf("%d tokens stored, want %d", len(seen), len(secrets))
	}
	var dump bytes.Buffer
	if _, err := lab.Store.Dump(context.Background(), func(r inventory.Record) error {
		dump.WriteString(r.Key)
		dump.Write(r.Value)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for name, s := range secrets {
		random := strings.TrimPrefix(s, "metal_")
		// Any 12 characters of the secret's random part would be a leak.
		for i := 0; i+12 <= len(random); i += 6 {
			if strings.Contains(dump.String(), random[i:i+12]) {
				t.Errorf("the store holds part of %s's secret", name)
				break
			}
		}
	}
}
