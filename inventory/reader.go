package inventory

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Reader is what the read verbs (metal machines, metal events) need of the
// inventory: a Store gives it (ReaderOf), and so does a client of the
// daemon's API while `metal serve` holds the store.
type Reader interface {
	// Machines returns every machine, sorted by name.
	Machines(ctx context.Context) ([]Machine, error)
	// Machine returns the machine called ref, or whose MAC is ref.
	Machine(ctx context.Context, ref string) (Machine, error)
	// Leases returns the DHCP leases (nil when the source has none).
	Leases(ctx context.Context) ([]Lease, error)
	// Events returns events in Seq order, as Store.Events.
	Events(ctx context.Context, q EventQuery) ([]Event, error)
	// Follow calls fn with each event matching q after q.AfterSeq, the
	// ones already logged first, then each as it is appended, until ctx
	// ends (nil) or fn fails.
	Follow(ctx context.Context, q EventQuery, fn func(Event) error) error
	Close() error
}

// ReaderOf is a Reader over an open store; closing it closes the store.
func ReaderOf(s Store) Reader { return storeReader{s: s} }

type storeReader struct{ s Store }

func (r storeReader) Close() error { return r.s.Close() }

func (r storeReader) Machines(ctx context.Context) ([]Machine, error) {
	ms, _, err := r.s.Machines(ctx)
	return ms, err
}

func (r storeReader) Machine(ctx context.Context, ref string) (Machine, error) {
	m, err := r.s.Machine(ctx, ref)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		if mac, merr := NormalizeMAC(ref); merr == nil {
			return r.s.MachineByMAC(ctx, mac)
		}
	}
	return m, err
}

func (r storeReader) Leases(ctx context.Context) ([]Lease, error) {
	ls, _, err := r.s.Leases(ctx)
	return ls, err
}

func (r storeReader) Events(ctx context.Context, q EventQuery) ([]Event, error) {
	return r.s.Events(ctx, q)
}

func (r storeReader) Follow(ctx context.Context, q EventQuery, fn func(Event) error) error {
	return Follow(ctx, r.s, q, fn)
}

// LeasedIPs returns the addresses leased at now, by MAC.
func LeasedIPs(ctx context.Context, r Reader, now time.Time) (map[string]netip.Addr, error) {
	leases, err := r.Leases(ctx)
	if err != nil {
		return nil, err
	}
	leased := map[string]netip.Addr{}
	for _, l := range leases {
		if !l.Expired(now) {
			leased[l.MAC] = l.IP
		}
	}
	return leased, nil
}

// Detail is what the inventory knows of one machine: its record, its
// lease, its erase records and its last events.
type Detail struct {
	Machine Machine
	// Removed: the machine is gone from the store (deprovisioned); Machine
	// holds only its name, and its events are what is left of it.
	Removed  bool
	Lease    *Lease
	Erasures []Event
	Events   []Event
}

// ReadDetail returns the Detail of the machine called ref or whose MAC is
// ref, with at most its last n events.
func ReadDetail(ctx context.Context, r Reader, ref string, n int) (Detail, error) {
	m, err := r.Machine(ctx, ref)
	removed := false
	if errors.Is(err, ErrNotFound) {
		// A deprovisioned machine is gone from the store, but its events
		// (its erase records first of all) are not.
		evs, eerr := r.Events(ctx, EventQuery{Machine: ref})
		if eerr != nil || len(evs) == 0 {
			return Detail{}, fmt.Errorf("no machine called %q or with that MAC in the store: `metal machines` lists them", ref)
		}
		m, removed, err = Machine{Name: ref}, true, nil
	}
	if err != nil {
		return Detail{}, err
	}
	d := Detail{Machine: m, Removed: removed}
	leases, err := r.Leases(ctx)
	if err != nil {
		return Detail{}, err
	}
	for _, l := range leases {
		if l.MAC == m.MAC && !removed {
			d.Lease = &l
		}
	}
	evs, err := r.Events(ctx, EventQuery{Machine: m.Name, MAC: m.MAC})
	if err != nil {
		return Detail{}, err
	}
	for _, e := range evs {
		if e.Kind == EventErase && e.Erase != nil {
			d.Erasures = append(d.Erasures, e)
		}
	}
	if len(evs) > n {
		evs = evs[len(evs)-n:]
	}
	d.Events = evs
	if d.Events == nil {
		d.Events = []Event{}
	}
	return d, nil
}

// QueryFor is the event query of ref (events --machine): a machine in the
// inventory is matched by name and MAC, an unknown MAC by MAC alone.
func QueryFor(ctx context.Context, r Reader, ref string) (EventQuery, error) {
	if ref == "" {
		return EventQuery{}, nil
	}
	m, err := r.Machine(ctx, ref)
	if err == nil {
		return EventQuery{Machine: m.Name, MAC: m.MAC}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return EventQuery{}, err
	}
	if mac, merr := NormalizeMAC(ref); merr == nil {
		return EventQuery{MAC: mac}, nil
	}
	return EventQuery{}, fmt.Errorf("--machine %q: no machine of that name in the store, and not a MAC: `metal machines` lists them", ref)
}

// Tail gives fn the last n events of ref (QueryFor; every event with n 0),
// then, with follow, each new one until ctx ends (which is no error).
func Tail(ctx context.Context, r Reader, ref string, n int, follow bool, fn func(Event) error) error {
	q, err := QueryFor(ctx, r, ref)
	if err != nil {
		return err
	}
	if n > 0 {
		if q.AfterSeq, err = TailStart(ctx, r, q, n); err != nil {
			return err
		}
	}
	if follow {
		err := r.Follow(ctx, q, fn)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	evs, err := r.Events(ctx, q)
	if err != nil {
		return err
	}
	for _, e := range evs {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}
