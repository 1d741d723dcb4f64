package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/daemon/internal/sse"
	"github.com/metal-dev/metal/inventory"
)

// maxEvents caps one page of events.
const maxEvents = 1000

// EventList is the body of GET /api/v1/events without follow.
type EventList struct {
	Events []inventory.Event `json:"events"`
}

// serveEvents answers a page of events, or with ?follow=true (or Accept:
// text/event-stream) a server-sent event stream: the events after
// ?after= (or the Last-Event-ID a reconnecting EventSource sends), then
// each new one as it is appended.
func (s *server) serveEvents(w http.ResponseWriter, r *http.Request, q inventory.EventQuery) {
	v := r.URL.Query()
	var err error
	if a := v.Get("after"); a != "" {
		if q.AfterSeq, err = strconv.ParseInt(a, 10, 64); err != nil || q.AfterSeq < 0 {
			writeError(w, http.StatusBadRequest, "after: want a non-negative event sequence number")
			return
		}
	}
	q.Limit = maxEvents
	if l := v.Get("limit"); l != "" {
		if q.Limit, err = strconv.Atoi(l); err != nil || q.Limit < 1 || q.Limit > maxEvents {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: want 1 to %d", maxEvents))
			return
		}
	}
	follow := v.Get("follow")
	stream := follow == "true" || follow == "1" || strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if follow != "" && follow != "true" && follow != "1" && follow != "false" && follow != "0" {
		writeError(w, http.StatusBadRequest, "follow: want true or false")
		return
	}
	if !stream {
		evs, err := s.opts.Store.Events(r.Context(), q)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		if evs == nil {
			evs = []inventory.Event{}
		}
		writeJSON(w, http.StatusOK, EventList{Events: evs})
		return
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil && n > q.AfterSeq {
			q.AfterSeq = n
		}
	}
	s.follow(w, r, q)
}

// follow streams events (inventory.Follow), with a keep-alive comment
// every heartbeat while none comes. A failed store or watch ends the
// stream with an "error" event; the client reconnects with Last-Event-ID
// and misses nothing.
func (s *server) follow(w http.ResponseWriter, r *http.Request, q inventory.EventQuery) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	st := sse.Start(w)
	var mu sync.Mutex // st is written by the follower and the heartbeat
	if st.Flush() != nil {
		return
	}
	go func() {
		beat := time.NewTicker(s.opts.Heartbeat)
		defer beat.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-beat.C:
				mu.Lock()
				err := st.KeepAlive()
				mu.Unlock()
				if err != nil {
					cancel()
					return
				}
			}
		}
	}()
	err := inventory.Follow(ctx, s.opts.Store, q, func(e inventory.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if err := st.Event(strconv.FormatInt(e.Seq, 10), "event", e); err != nil {
			return errClientGone
		}
		if err := st.Flush(); err != nil {
			return errClientGone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errClientGone) && ctx.Err() == nil {
		mu.Lock()
		st.Send("", "error", Error{Error: err.Error()})
		mu.Unlock()
	}
}

var errClientGone = errors.New("the client went away")
