// Package gcheadroom keeps a least amount of heap growth between garbage
// collections in a long-running server.
//
// Go's collector runs when the heap has grown by GOGC percent of what was
// live after the last collection. metal serve keeps little live (a few
// MiB) and allocates a few KiB per request, so at the default it collects
// many times a second under a boot storm or a flood of script requests,
// and the collections cost more CPU than the requests' own code. Raising
// the percentage while the live heap is small bounds that: the heap may
// grow by at least the headroom before a collection, which costs at most
// that much more memory. Once the live heap is large the operator's GOGC
// (default 100) applies unchanged.
package gcheadroom

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// maxPercent bounds the percentage however small the live heap is: the
// runtime's own minimum heap of 4 MiB is far below a useful headroom.
const maxPercent = 100_000

// Keep sets the collector's percentage every interval so that the heap may
// grow by at least headroom bytes between collections, and never below the
// percentage in force when it started (GOGC). It restores that when ctx
// ends. GOGC=off is left alone, as is a memory limit (GOMEMLIMIT), which
// still caps the heap.
func Keep(ctx context.Context, headroom uint64, interval time.Duration) {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		return
	}
	defer debug.SetGCPercent(base)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	current := base
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			want := Percent(base, headroom, sample[0].Value.Uint64())
			// Moved only by more than a tenth: each change recomputes
			// the collector's goal.
			if math.Abs(float64(want-current)) > float64(current)/10 {
				debug.SetGCPercent(want)
				current = want
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Percent is the collector percentage that lets a heap of live bytes grow
// by at least headroom, and never less than base.
func Percent(base int, headroom, live uint64) int {
	if live == 0 {
		return maxPercent
	}
	p := headroom * 100 / live
	if p > maxPercent {
		return maxPercent
	}
	return max(base, int(p))
}
