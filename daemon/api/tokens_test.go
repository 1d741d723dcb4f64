package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/api/apitest"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/etcdtest"
)

func TestRoleAllows(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		have, need api.Role
		want       bool
	}{
		"read reads":       {api.RoleRead, api.RoleRead, true},
		"read cannot act":  {api.RoleRead, api.RoleOperate, false},
		"operate acts":     {api.RoleOperate, api.RoleOperate, true},
		"operate no admin": {api.RoleOperate, api.RoleAdmin, false},
		"admin does all":   {api.RoleAdmin, api.RoleOperate, true},
		"unknown nothing":  {api.Role("root"), api.RoleRead, false},
		"empty nothing":    {api.Role(""), api.RoleRead, false},
	}
	for name, tc := range tests {
		if got := tc.have.Allows(tc.need); got != tc.want {
			t.Errorf("%s: %s.Allows(%s) = %v", name, tc.have, tc.need, got)
		}
	}
	if _, err := api.ParseRole("superuser"); err == nil {
		t.Error("ParseRole accepted superuser")
	}
}

// TestTokenLastUse: a use is recorded, at most once a minute.
func TestTokenLastUse(t *testing.T) {
	t.Parallel()
	lab := apitest.New(t, "testdata/site.hcl")
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tokens := api.NewTokens(lab.Store, clock, nil)
	ctx := context.Background()
	c, err := tokens.Create(ctx, api.NewToken{Name: "ci", Role: api.RoleRead})
	if err != nil {
		t.Fatal(err)
	}
	lastUse := func() time.Time {
		list, err := tokens.List(ctx)
		if err != nil || len(list) != 1 {
			t.Fatalf("list: %v %v", list, err)
		}
		return list[0].LastUsed
	}
	if !lastUse().IsZero() {
		t.Fatal("a new token has a last use")
	}
	for _, step := range []struct {
		after time.Duration
		want  time.Time
	}{
		{0, now},
		{30 * time.Second, now}, // within the minute: not written
		{31 * time.Second, now.Add(61 * time.Second)}, // a minute on: written
	} {
		now = now.Add(step.after)
		if _, err := tokens.Verify(ctx, c.Secret); err != nil {
			t.Fatal(err)
		}
		if got := lastUse(); !got.Equal(step.want) {
			t.Errorf("last use %v, want %v", got, step.want)
		}
	}
}

// TestMigrateTokenFile: the token file of an older metal becomes admin
// tokens in the store; its secrets keep working; the file is read once.
func TestMigrateTokenFile(t *testing.T) {
	t.Parallel()
	lab := apitest.New(t, "testdata/site.hcl")
	dir := t.TempDir()
	path := filepath.Join(dir, api.TokenFile)
	// A line as the older metal wrote it: salt 16 bytes of 0x01, secret
	// metal_old.
	salt := bytes.Repeat([]byte{1}, 16)
	sum := sha256.Sum256(append(salt, "metal_old"...))
	line := "ops sha256 " + hex.EncodeToString(salt) + " " + hex.EncodeToString(sum[:]) + "\n"
	if err := os.WriteFile(path, []byte("# metal API tokens\n"+line), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n, err := api.MigrateTokenFile(ctx, lab.Store, path, nil)
	if err != nil || n != 1 {
		t.Fatalf("migrate: %d, %v", n, err)
	}
	id, err := api.NewTokens(lab.Store, nil, nil).Verify(ctx, "metal_old")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(api.Identity{Name: "ops", Role: api.RoleAdmin}, id); diff != "" {
		t.Errorf("migrated identity (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("token file still there: %v", err)
	}
	if n, err := api.MigrateTokenFile(ctx, lab.Store, path, nil); err != nil || n != 0 {
		t.Errorf("second migration: %d, %v", n, err)
	}
}

// TestTokensSharedThroughEtcd: two metal servers over one etcd store
// honour the same tokens: made on one, used on the other, and a revoke
// or an expiry on one is refused by the other at its next request.
func TestTokensSharedThroughEtcd(t *testing.T) {
	c := etcdtest.New(t, 1)
	url := c.StateURL("/metal-tokens")
	ctx := context.Background()
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	var servers []string
	var stores []inventory.Store
	for range 2 {
		s, err := backend.Open(ctx, url, backend.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		srv := httptest.NewServer(api.New(api.Options{Store: s, Tokens: api.NewTokens(s, clock, nil)}))
		t.Cleanup(srv.Close)
		servers = append(servers, srv.URL)
		stores = append(stores, s)
	}
	first := api.NewTokens(stores[0], clock, nil)
	alice, err := first.Create(ctx, api.NewToken{Name: "alice", Role: api.RoleRead})
	if err != nil {
		t.Fatal(err)
	}
	brief, err := first.Create(ctx, api.NewToken{Name: "brief", Role: api.RoleRead, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	whoami := func(server int, secret string) int {
		req, _ := http.NewRequest(http.MethodGet, servers[server]+"/api/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range servers {
		if code := whoami(i, alice.Secret); code != http.StatusOK {
			t.Errorf("server %d: alice's token answered %d", i, code)
		}
		if code := whoami(i, brief.Secret); code != http.StatusOK {
			t.Errorf("server %d: brief's token answered %d", i, code)
		}
	}
	if err := first.Revoke(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if code := whoami(1, alice.Secret); code != http.StatusUnauthorized {
		t.Errorf("the other server: revoked token answered %d, want 401", code)
	}
	if code := whoami(1, brief.Secret); code != http.StatusUnauthorized {
		t.Errorf("the other server: expired token answered %d, want 401", code)
	}
}
