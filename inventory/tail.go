package inventory

import "context"

// EventReader reads the event log: a Store, or a client of a daemon's API.
type EventReader interface {
	Events(ctx context.Context, q EventQuery) ([]Event, error)
}

// TailStart returns the AfterSeq from which q yields its last n events.
// The whole log is gap-free, so it is the last Seq minus n, and the last
// Seq is found with a few one-event reads (a doubling search, then halving)
// rather than by reading the log. A filtered query reads its matches,
// which are one machine's: few.
func TailStart(ctx context.Context, r EventReader, q EventQuery, n int) (int64, error) {
	if q.Machine != "" || q.MAC != "" {
		evs, err := r.Events(ctx, q)
		if err != nil || len(evs) <= n {
			return 0, err
		}
		return evs[len(evs)-n-1].Seq, nil
	}
	after := func(seq int64) (bool, error) {
		evs, err := r.Events(ctx, EventQuery{AfterSeq: seq, Limit: 1})
		return len(evs) > 0, err
	}
	// Invariant: some event is after lo, none after hi.
	lo, hi := int64(0), int64(1)
	for {
		ok, err := after(hi)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		lo, hi = hi, hi*2
	}
	if ok, err := after(lo); err != nil || !ok {
		return 0, err // empty log
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := after(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	// hi is the last Seq.
	return max(0, hi-int64(n)), nil
}
