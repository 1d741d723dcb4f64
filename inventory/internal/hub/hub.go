// Package hub fans committed changes of an in-process store (bbolt, memory)
// out to watchers. It keeps the last changes in a ring so a watcher that
// listed at revision R can watch from R without missing a write in between.
package hub

import (
	"context"
	"errors"
	"sync"
)

// ErrLagged ends a subscription whose reader fell behind, or which asked for
// a revision older than the ring holds.
var ErrLagged = errors.New("watch fell behind")

// Item is one change at a store revision.
type Item[E any] struct {
	Rev int64
	E   E
}

type sub[E any] struct {
	ch    chan Item[E]
	match func(E) bool
	done  chan struct{}
	err   error // set before done is closed
	once  sync.Once
}

func (s *sub[E]) stop(err error) {
	s.once.Do(func() { s.err = err; close(s.done) })
}

// Hub is safe for concurrent use. The zero value is not usable; use New.
type Hub[E any] struct {
	mu     sync.Mutex
	ring   []Item[E]
	size   int
	oldest int64 // revision of the oldest change the ring can replay from
	last   int64
	subs   map[*sub[E]]struct{}
	buffer int
}

// New returns a hub that replays up to ringSize changes and gives each
// watcher a buffer of buffer changes before it is dropped with ErrLagged.
func New[E any](ringSize, buffer int, lastRev int64) *Hub[E] {
	return &Hub[E]{size: ringSize, oldest: lastRev, last: lastRev, subs: map[*sub[E]]struct{}{}, buffer: buffer}
}

// Publish hands the changes of one committed revision to every watcher.
// Callers publish revisions in commit order.
func (h *Hub[E]) Publish(rev int64, es []E) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range es {
		h.ring = append(h.ring, Item[E]{Rev: rev, E: e})
	}
	if over := len(h.ring) - h.size; over > 0 {
		h.oldest = h.ring[over-1].Rev
		// Drop the oldest by slicing past them: append moves the ring
		// to a new array only when it runs out of room, about once per
		// ringSize changes, where copying it on every publish once full
		// cost a ringSize copy and allocation per committed change.
		clear(h.ring[:over])
		h.ring = h.ring[over:]
	}
	h.last = rev
	for s := range h.subs {
		for _, e := range es {
			if s.match != nil && !s.match(e) {
				continue
			}
			select {
			case s.ch <- Item[E]{Rev: rev, E: e}:
			default:
				// A slow reader must not stall writers; it re-lists instead.
				s.stop(ErrLagged)
				delete(h.subs, s)
			}
		}
	}
}

// Subscribe delivers changes after revision from (0: from now) that match,
// until ctx ends or the reader lags. onEnd's error is nil when ctx ended.
func (h *Hub[E]) Subscribe(ctx context.Context, from int64, match func(E) bool, deliver func(Item[E]) bool, onEnd func(error)) error {
	h.mu.Lock()
	if from != 0 && from < h.oldest {
		h.mu.Unlock()
		return ErrLagged
	}
	s := &sub[E]{ch: make(chan Item[E], h.buffer+len(h.ring)), match: match, done: make(chan struct{})}
	if from != 0 {
		for _, it := range h.ring {
			if it.Rev > from && (match == nil || match(it.E)) {
				s.ch <- it
			}
		}
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()

	go func() {
		defer func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
		}()
		for {
			select {
			case it := <-s.ch:
				if !deliver(it) {
					onEnd(nil)
					return
				}
			case <-s.done:
				// Drain what was queued before the drop, then report it.
				for {
					select {
					case it := <-s.ch:
						if !deliver(it) {
							onEnd(nil)
							return
						}
					default:
						onEnd(s.err)
						return
					}
				}
			case <-ctx.Done():
				onEnd(nil)
				return
			}
		}
	}()
	return nil
}

// Close ends every subscription with err.
func (h *Hub[E]) Close(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.stop(err)
		delete(h.subs, s)
	}
}
