package api_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/daemon/api"
)

func TestTokens(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state", api.TokenFile)
	tokens := api.OpenTokens(path)
	if _, ok := tokens.Verify("metal_anything"); ok {
		t.Fatal("a missing token file verified a token")
	}
	alice, err := api.AddToken(path, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// The file is private and holds no secret.
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), strings.TrimPrefix(alice, "metal_")) {
		t.Fatal("the token file holds the secret")
	}
	// Read again on change: a token added later works at once.
	bob, err := api.AddToken(path, "bob")
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		secret, name string
		ok           bool
	}{
		"alice":      {alice, "alice", true},
		"bob":        {bob, "bob", true},
		"altered":    {alice[:len(alice)-1] + "x", "", false},
		"no prefix":  {strings.TrimPrefix(alice, "metal_"), "", false},
		"empty":      {"", "", false},
		"with extra": {alice + " ", "", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := tokens.Verify(tc.secret)
			if got != tc.name || ok != tc.ok {
				t.Errorf("Verify = %q, %v; want %q, %v", got, ok, tc.name, tc.ok)
			}
		})
	}
	names, err := tokens.Names()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"alice", "bob"}, names); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	if _, err := api.AddToken(path, "alice"); err == nil {
		t.Error("a second token called alice was created")
	}
	if _, err := api.AddToken(path, "bad name"); err == nil {
		t.Error("a token name with a space was accepted")
	}
	// A damaged file verifies nothing, and says where it is damaged.
	if err := os.WriteFile(path, append(data, []byte("carol sha256 nothex\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := tokens.Verify(alice); ok {
		t.Error("a damaged token file still verified a token")
	}
	if _, err := tokens.Names(); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("damaged file error = %v, want one naming line 3", err)
	}
}
