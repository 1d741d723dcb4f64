package gcheadroom

import (
	"context"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	tests := map[string]struct {
		base           int
		headroom, live uint64
		want           int
	}{
		"small heap":            {100, 64 * mib, 8 * mib, 800},
		"large heap keeps GOGC": {100, 64 * mib, 512 * mib, 100},
		"operator's GOGC above": {1000, 64 * mib, 8 * mib, 1000},
		"tiny heap is capped":   {100, 64 * mib, 1, maxPercent},
		"nothing live yet":      {100, 64 * mib, 0, maxPercent},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Percent(tc.base, tc.headroom, tc.live); got != tc.want {
				t.Errorf("Percent(%d, %d, %d) = %d, want %d", tc.base, tc.headroom, tc.live, got, tc.want)
			}
		})
	}
}

// TestKeep runs Keep in this test process (a small live heap): the
// percentage rises above the default while it runs, and is back to what
// it was once its context ends.
func TestKeep(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Keep(ctx, 1<<30, time.Millisecond)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		if p > 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GC percent still %d with a 1 GiB headroom", p)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GC percent %d after Keep ended, want 100 restored", p)
	}
}
