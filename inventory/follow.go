package inventory

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// followPage bounds one read of the backlog while following.
const followPage = 1000

// Matches applies q's machine filter to one event, as Events does: by
// name, or by MAC (for events logged before the machine had a name).
func (q EventQuery) Matches(e Event) bool {
	if q.Machine == "" && q.MAC == "" {
		return true
	}
	if q.Machine != "" && e.Machine == q.Machine {
		return true
	}
	if q.MAC == "" || e.MAC == "" {
		return false
	}
	want, err := NormalizeMAC(q.MAC)
	if err != nil {
		return strings.EqualFold(e.MAC, q.MAC)
	}
	got, err := NormalizeMAC(e.MAC)
	return err == nil && got == want
}

// Follow calls fn with each event of store matching q after q.AfterSeq:
// the ones already logged first, then each as it is appended, until ctx
// ends (nil) or fn fails (its error). q.Limit is ignored.
//
// It watches before it lists, so an event appended in between is seen by
// one or the other; Seq drops the duplicates. A watch that fell behind is
// started again, listing from the last event passed on, so nothing is
// missed or passed twice.
func Follow(ctx context.Context, store Store, q EventQuery, fn func(Event) error) error {
	q.Limit = followPage
	for {
		wctx, cancel := context.WithCancel(ctx)
		changes, err := store.Watch(wctx, WatchOptions{Kinds: []Kind{KindEvent}})
		if err != nil {
			cancel()
			return fmt.Errorf("watch events: %w", err)
		}
		if err := followBacklog(ctx, store, &q, fn); err != nil {
			cancel()
			return err
		}
		lagged, err := followChanges(ctx, changes, &q, fn)
		cancel()
		if !lagged {
			return err
		}
	}
}

// followBacklog passes on the logged events after q.AfterSeq, a page at
// a time, advancing q.AfterSeq.
func followBacklog(ctx context.Context, store Store, q *EventQuery, fn func(Event) error) error {
	for {
		evs, err := store.Events(ctx, *q)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("list events: %w", err)
		}
		for _, e := range evs {
			if err := fn(e); err != nil {
				return err
			}
			q.AfterSeq = e.Seq
		}
		if len(evs) < q.Limit {
			return nil
		}
	}
}

// followChanges passes on the watched events matching q until the watch
// ends; lagged says it fell behind and must be started again.
func followChanges(ctx context.Context, changes <-chan Change, q *EventQuery, fn func(Event) error) (lagged bool, err error) {
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case c, ok := <-changes:
			if !ok {
				return false, nil
			}
			if c.Err != nil {
				if errors.Is(c.Err, ErrWatchLagged) {
					return true, nil
				}
				return false, fmt.Errorf("event watch ended: %w", c.Err)
			}
			e := c.Event
			if e == nil || c.Deleted || e.Seq <= q.AfterSeq || !q.Matches(*e) {
				continue
			}
			if err := fn(*e); err != nil {
				return false, err
			}
			q.AfterSeq = e.Seq
		}
	}
}
