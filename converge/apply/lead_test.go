package apply_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/inventory"
)

// TestLeadReleaseIsNotLoss: giving the apply leadership up at the end of
// a run is not reported as losing it (which made a daemon log an error
// and abandon a run that had already finished), and a second Lead gets it
// afterwards without waiting.
func TestLeadReleaseIsNotLoss(t *testing.T) {
	ctx := context.Background()
	store, err := inventory.Open(ctx, inventory.NewMemoryKV(), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var lost, waited atomic.Int32
	release, err := apply.Lead(ctx, store, func() { waited.Add(1) }, func() { lost.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	release()
	release() // twice is harmless
	time.Sleep(100 * time.Millisecond)
	if n := lost.Load(); n != 0 {
		t.Errorf("release reported as %d losses", n)
	}
	again, err := apply.Lead(ctx, store, func() { waited.Add(1) }, func() { lost.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	again()
	if n := waited.Load(); n != 0 {
		t.Errorf("an apply waited %d times for a leadership given up", n)
	}
}
