package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
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

// follow streams events. It watches before it lists, so an event appended
// in between is seen by one or the other (duplicates are dropped by Seq).
func (s *server) follow(w http.ResponseWriter, r *http.Request, q inventory.EventQuery) {
	ctx := r.Context()
	changes, err := s.opts.Store.Watch(ctx, inventory.WatchOptions{Kinds: []inventory.Kind{inventory.KindEvent}})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	st := sse.Start(w)
	last := q.AfterSeq
	send := func(e inventory.Event) bool {
		if err := st.Event(strconv.FormatInt(e.Seq, 10), "event", e); err != nil {
			return false
		}
		last = e.Seq
		return true
	}
	for {
		backlog, err := s.opts.Store.Events(ctx, inventory.EventQuery{Machine: q.Machine, MAC: q.MAC, AfterSeq: last, Limit: maxEvents})
		if err != nil {
			st.Send("", "error", Error{Error: "list events: " + err.Error()})
			return
		}
		for _, e := range backlog {
			if !send(e) {
				return
			}
		}
		if len(backlog) < maxEvents {
			break
		}
	}
	if st.Flush() != nil {
		return
	}
	beat := time.NewTicker(s.opts.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if st.KeepAlive() != nil {
				return
			}
		case c, ok := <-changes:
			if !ok {
				return
			}
			if c.Err != nil {
				// The client reconnects with Last-Event-ID and misses nothing.
				st.Send("", "error", Error{Error: "event watch ended: " + c.Err.Error()})
				return
			}
			e := c.Event
			if e == nil || c.Deleted || e.Seq <= last || !eventMatches(q, *e) {
				continue
			}
			if !send(*e) || st.Flush() != nil {
				return
			}
		}
	}
}

// eventMatches applies an EventQuery's machine filter to one event, as
// the store does: by name, or by MAC for events not yet named.
func eventMatches(q inventory.EventQuery, e inventory.Event) bool {
	if q.Machine == "" && q.MAC == "" {
		return true
	}
	return (q.Machine != "" && e.Machine == q.Machine) || (q.MAC != "" && strings.EqualFold(e.MAC, q.MAC))
}
