package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	fill := strings.NewReplacer("{name}", "web-01", "{id}", runID)
	var out []call
	for path, methods := range doc.Paths {
		for method := range methods {
			m := strings.ToUpper(method)
			if m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions || method == "parameters" {
				continue
			}
			out = append(out, call{method: m, path: fill.Replace(path), body: writeBody(path)})
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
	if path == "/api/v1/actions" {
		return `{"action":"power-cycle","machine":"web-01","reason":"auth test"}`
	}
	return `{}`
}

// TestEveryWriteNeedsAValidToken: every state-changing route of
// openapi.yaml, and every other method on every documented path, is
// refused without a valid token, whether reads are open or not, however
// the credential is sent; nothing is carried out and the store does not
// change. With the valid token, the documented ones succeed.
func TestEveryWriteNeedsAValidToken(t *testing.T) {
	for _, openReads := range []bool{false, true} {
		tokensPath := filepath.Join(t.TempDir(), api.TokenFile)
		f2 := serveWithTokens(t, tokensPath, openReads)
		live, err := api.AddToken(tokensPath, "ops")
		if err != nil {
			t.Fatal(err)
		}
		revoked, err := api.AddToken(tokensPath, "leaver")
		if err != nil {
			t.Fatal(err)
		}
		// Known to work before it is revoked, so its refusal below is the
		// revocation's doing.
		if code, body := f2.do(t, call{method: http.MethodGet, path: "/api/v1/whoami", token: revoked}); code != http.StatusOK {
			t.Fatalf("whoami with the token before revoking it: %d %s", code, body)
		}
		removeTokenLine(t, tokensPath, "leaver")

		writes := documentedWrites(t, f2.lab.RunID)
		var undocumented []call
		for _, r := range api.Routes() {
			path := strings.NewReplacer("{name}", "web-01", "{id}", f2.lab.RunID).Replace(r.Pattern)
			for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
				if m != r.Method {
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

// serveWithTokens serves the API over a seeded store with the tokens at
// path, which the test writes.
func serveWithTokens(t *testing.T, path string, openReads bool) *fixture {
	t.Helper()
	lab := apitest.New(t, "testdata/site.hcl")
	lab.Seed(t)
	acts := &apitest.Actions{Store: lab.Store}
	h := api.New(api.Options{Store: lab.Store, Actions: acts, Tokens: api.OpenTokens(path), OpenReads: openReads})
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

func removeTokenLine(t *testing.T, path, name string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if !strings.HasPrefix(line, name+" ") {
			keep = append(keep, line)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(keep, "")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTokensStoredHashed: the token file holds, for each token, a salt
// and SHA-256 of salt and secret, and neither the secret nor any part of
// its random text.
func TestTokensStoredHashed(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), api.TokenFile)
	secrets := map[string]string{}
	for _, name := range []string{"alice", "bob", "ci"} {
		s, err := api.AddToken(path, name)
		if err != nil {
			t.Fatal(err)
		}
		secrets[name] = s
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 4 || f[1] != "sha256" {
			t.Fatalf("token line %q: want name sha256 salt hash", line)
		}
		secret, ok := secrets[f[0]]
		if !ok {
			t.Fatalf("token line for unknown name %q", f[0])
		}
		salt, err := hex.DecodeString(f[2])
		if err != nil || len(salt) < 16 {
			t.Errorf("%s: salt %q is not 16+ bytes of hex", f[0], f[2])
		}
		sum := sha256.Sum256(append(salt, secret...))
		if f[3] != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: stored hash is not sha256(salt + secret)", f[0])
		}
		if seen[f[2]] {
			t.Errorf("%s: salt reused", f[0])
		}
		seen[f[2]] = true
	}
	if len(seen) != len(secrets) {
		t.Errorf("%d token lines, want %d", len(seen), len(secrets))
	}
	for name, s := range secrets {
		random := strings.TrimPrefix(s, "metal_")
		// Any 12 characters of the secret's random part would be a leak.
		for i := 0; i+12 <= len(random); i += 6 {
			if strings.Contains(string(data), random[i:i+12]) {
				t.Errorf("the token file holds part of %s's secret", name)
				break
			}
		}
	}
}
