package inventory

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// maxEventBatch bounds the events one Txn appends, and maxEventTxnOps the
// operations of that Txn (each event is up to three puts, each trimmed
// event up to three deletes): etcd refuses a Txn of more than 128
// operations by default. A KV that takes larger Txns (TxnLimiter: bbolt)
// gets batches of up to maxLargeEventBatch: a rack booting at once
// records four events per machine, and at 16 a commit each batch was a
// commit, two flushes, per 16 of them.
const (
	maxEventBatch      = 16
	maxEventTxnOps     = 120
	maxLargeEventBatch = 256
)

// eventLimits are the largest batch of events one Txn appends on kv, and
// the operations that Txn may carry.
func eventLimits(kv KV) (batch, ops int) {
	l, ok := kv.(TxnLimiter)
	if !ok {
		return maxEventBatch, maxEventTxnOps
	}
	ops = l.MaxTxnOps()
	// Room for the counter and each event's three puts, and a trim of as
	// many as the batch appends.
	batch = min(maxLargeEventBatch, (ops-1)/6)
	if batch <= maxEventBatch {
		return maxEventBatch, maxEventTxnOps
	}
	return batch, ops
}

// eventQueue gathers the events appended at the same time in this process
// so that one Txn writes them all: under the engine's many machines, DHCP
// and agents, appenders would otherwise each take a durable write, and all
// but one of each round would lose the counter's CAS and write again.
//
// The first appender to find the queue idle starts a drain goroutine; it
// writes batch after batch until the queue is empty, then ends. Nothing
// waits for a batch to fill.
type eventQueue struct {
	// batch is the most events one Txn appends (eventLimits).
	batch    int
	mu       sync.Mutex
	pending  []*eventReq
	draining bool
}

// eventReq is one caller's events, appended in their order within one
// Txn (append splits a longer list into requests of at most batch events,
// queued one after the other).
type eventReq struct {
	ctx  context.Context
	evs  []Event
	err  error
	done chan struct{}
}

// append writes evs in order and sets each one's Seq. On error, the events
// left without a Seq were not written.
func (q *eventQueue) append(ctx context.Context, s *store, evs []Event) error {
	var reqs []*eventReq
	for len(evs) > 0 {
		n := min(len(evs), q.batch)
		reqs = append(reqs, &eventReq{ctx: ctx, evs: evs[:n:n], done: make(chan struct{})})
		evs = evs[n:]
	}
	q.mu.Lock()
	// One after the other in the queue: drained in order, so a later
	// request's events get later Seqs.
	q.pending = append(q.pending, reqs...)
	start := !q.draining
	q.draining = true
	q.mu.Unlock()
	if start {
		go q.drain(s)
	}
	// Waiting past ctx: a queued event may still be written, and the
	// caller must not be told it was not. The batch's own context ends
	// once every caller in it has given up, so this wait is bounded.
	var err error
	for _, r := range reqs {
		<-r.done
		if err == nil {
			err = r.err
		}
	}
	return err
}

func (q *eventQueue) drain(s *store) {
	for {
		q.mu.Lock()
		// Whole requests, up to batch events (a request is never longer).
		n, events := 0, 0
		for n < len(q.pending) && events+len(q.pending[n].evs) <= q.batch {
			events += len(q.pending[n].evs)
			n++
		}
		if n == 0 {
			q.draining = false
			q.mu.Unlock()
			return
		}
		batch := q.pending[:n:n]
		q.pending = q.pending[n:]
		q.mu.Unlock()
		q.write(s, batch)
	}
}

// write appends batch's events and answers each caller.
func (q *eventQueue) write(s *store, batch []*eventReq) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.done)
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	defer func() {
		// A bug must not leave appenders waiting forever.
		if p := recover(); p != nil {
			s.log.Error("append events panic", "panic", fmt.Sprint(p))
			for _, r := range live {
				r.err = fmt.Errorf("append event: internal error: %v", p)
				close(r.done)
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The batch goes on while any of its callers still waits.
	waiting := atomic.Int64{}
	waiting.Store(int64(len(live)))
	for _, r := range live {
		stop := context.AfterFunc(r.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	var evs []Event
	for _, r := range live {
		evs = append(evs, r.evs...)
	}
	err := s.appendEvents(ctx, evs)
	for _, r := range live {
		if err == nil {
			n := copy(r.evs, evs)
			evs = evs[n:]
		}
		r.err = err
		close(r.done)
	}
}
