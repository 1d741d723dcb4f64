package backup_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/metal-dev/metal/inventory/backup"
)

// Create is exclusive: a second Create of a name fails with ErrExists and
// leaves the first one's content.
func TestCreateExclusive(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	r := dial(t, d)
	if err := r.Create(ctx, "claim", strings.NewReader("first")); err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, "claim", strings.NewReader("second")); !errors.Is(err, backup.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	var b strings.Builder
	if err := r.Get(ctx, "claim", &b); err != nil || b.String() != "first" {
		t.Errorf("claim holds %q (%v), want first", b.String(), err)
	}
}
