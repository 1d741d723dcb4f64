package storetest

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metal-dev/metal/inventory"
)

// testAPITokens: tokens are created once, updated by CAS, and a token
// revoked meanwhile cannot be written back by a late update.
func testAPITokens(t *testing.T, b Backend) {
	ctx := ctxT(t)
	clk := NewClock()
	s, _ := open(t, b, inventory.Options{Now: clk.Now})

	if got, err := s.APITokens(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty store: tokens %v, %v", got, err)
	}
	alice := inventory.APIToken{Name: "alice", Role: "read", Salt: []byte("0123456789abcdef"), Hash: make([]byte, 32), Created: clk.Now()}
	created, err := s.PutAPIToken(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutAPIToken(ctx, alice); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("second create: %v, want ErrConflict", err)
	}
	used := created
	used.LastUsed = clk.Now()
	if used, err = s.PutAPIToken(ctx, used); err != nil {
		t.Fatalf("record use: %v", err)
	}
	if _, err := s.PutAPIToken(ctx, created); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("stale update: %v, want ErrConflict", err)
	}
	if _, err := s.PutAPIToken(ctx, inventory.APIToken{Name: "a/b", Role: "read", Hash: []byte{1}}); !errors.Is(err, inventory.ErrInvalid) {
		t.Errorf("bad name: %v, want ErrInvalid", err)
	}
	got, err := s.APITokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]inventory.APIToken{used}, got, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("tokens (-want +got):\n%s", diff)
	}
	if err := s.DeleteAPIToken(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAPIToken(ctx, "alice"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("second revoke: %v, want ErrNotFound", err)
	}
	if _, err := s.PutAPIToken(ctx, used); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("use recorded after revoke: %v, want ErrConflict", err)
	}
	if got, _ := s.APITokens(ctx); len(got) != 0 {
		t.Errorf("after revoke: %v", got)
	}
}
