package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metal-dev/metal/daemon/api"
)

// TestTokenVerbs: create, list (JSON and table) and revoke on an embedded
// store with no daemon; the token file of an older metal is moved into
// the store as an admin token on first use.
func TestTokenVerbs(t *testing.T) {
	dir := t.TempDir()
	salt := bytes.Repeat([]byte{7}, 16)
	sum := sha256.Sum256(append(salt, "metal_legacy"...))
	old := "legacy sha256 " + hex.EncodeToString(salt) + " " + hex.EncodeToString(sum[:]) + "\n"
	if err := os.WriteFile(filepath.Join(dir, api.TokenFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	code, secret, stderr := metal(t, nil, "token", "create", "--state-dir", dir, "--role", "read", "--expires", "24h", "--name", "alice")
	if code != 0 || !strings.HasPrefix(secret, "metal_") || !strings.Contains(stderr, "role read") || !strings.Contains(stderr, "expires") {
		t.Fatalf("create: exit %d\n%s%s", code, secret, stderr)
	}
	if code, _, stderr := metal(t, nil, "token", "create", "--state-dir", dir, "--role", "root"); code != exitUsage || !strings.Contains(stderr, "read, operate or admin") {
		t.Errorf("create with an unknown role: exit %d %s", code, stderr)
	}
	if code, _, stderr := metal(t, nil, "token", "create", "--state-dir", dir, "--name", "x"); code == 0 || !strings.Contains(stderr, "role") {
		t.Errorf("create without a role: exit %d %s", code, stderr)
	}
	code, out, stderr := metal(t, nil, "token", "list", "--state-dir", dir, "--json")
	if code != 0 {
		t.Fatalf("list: exit %d %s", code, stderr)
	}
	var list api.TokenList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	roles := map[string]api.Role{}
	for _, tok := range list.Tokens {
		roles[tok.Name] = tok.Role
	}
	if roles["alice"] != api.RoleRead || roles["legacy"] != api.RoleAdmin || len(roles) != 2 {
		t.Errorf("tokens %v, want alice (read) and the migrated legacy (admin)", roles)
	}
	if strings.Contains(out, strings.TrimPrefix(strings.TrimSpace(secret), "metal_")) {
		t.Error("token list shows a secret")
	}
	if code, _, stderr := metal(t, nil, "token", "revoke", "--state-dir", dir, "alice"); code != 0 {
		t.Fatalf("revoke: exit %d %s", code, stderr)
	}
	if code, _, stderr := metal(t, nil, "token", "revoke", "--state-dir", dir, "alice"); code == 0 || !strings.Contains(stderr, "no token called") {
		t.Errorf("second revoke: exit %d %s", code, stderr)
	}
	code, out, _ = metal(t, nil, "token", "list", "--state-dir", dir)
	if code != 0 || strings.Contains(out, "alice") || !strings.Contains(out, "legacy") || !strings.Contains(out, "LAST USED") {
		t.Errorf("list after revoke: exit %d\n%s", code, out)
	}
}
