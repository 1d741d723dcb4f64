package console

import (
	"context"
	"sync"

	"github.com/metal-dev/metal/inventory"
)

// lastEvents remembers each machine's newest event for the machines
// table. The store lists events oldest first, so the first call reads the
// log once in pages and later calls read only what was appended since:
// a table refresh costs the new events, not the whole log.
type lastEvents struct {
	mu     sync.Mutex
	cursor int64
	byName map[string]inventory.Event
	byMAC  map[string]inventory.Event
}

func newLastEvents() *lastEvents {
	return &lastEvents{byName: map[string]inventory.Event{}, byMAC: map[string]inventory.Event{}}
}

const lastEventsPage = 5000

// update catches up with the log and returns a lookup of a machine's
// newest event (by name, else by MAC for events from before it was named).
func (l *lastEvents) update(ctx context.Context, st inventory.Store) (func(inventory.Machine) *inventory.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		evs, err := st.Events(ctx, inventory.EventQuery{AfterSeq: l.cursor, Limit: lastEventsPage})
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if e.Machine != "" {
				l.byName[e.Machine] = e
			}
			if e.MAC != "" {
				l.byMAC[e.MAC] = e
			}
			l.cursor = e.Seq
		}
		if len(evs) < lastEventsPage {
			break
		}
	}
	// Copy what the table needs, so the lookup runs without the lock.
	byName := make(map[string]inventory.Event, len(l.byName))
	for k, v := range l.byName {
		byName[k] = v
	}
	byMAC := make(map[string]inventory.Event, len(l.byMAC))
	for k, v := range l.byMAC {
		byMAC[k] = v
	}
	return func(m inventory.Machine) *inventory.Event {
		a, okA := byName[m.Name]
		b, okB := byMAC[m.MAC]
		switch {
		case okA && okB && b.Seq > a.Seq:
			return &b
		case okA:
			return &a
		case okB:
			return &b
		}
		return nil
	}, nil
}
