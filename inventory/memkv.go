package inventory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/metal-dev/metal/inventory/internal/hub"
)

// MemoryKV is an in-memory KV for tests of other packages (pxe, site) and for
// `metal apply` dry runs. It passes the same conformance suite as the real
// backends, but keeps nothing across processes.
type MemoryKV struct {
	mu sync.Mutex
	// keys holds every key of vals, sorted unless dirty. Writes append
	// and deletes leave the key behind, and the next read sorts and
	// compacts once: inserting in place cost a copy of the tail per new
	// key, minutes for the 100,000 events of a store benchmark.
	keys   []string
	dirty  bool
	vals   map[string]KeyValue
	rev    int64
	hub    *hub.Hub[KVEvent]
	closed bool
}

// NewMemoryKV returns an empty in-memory KV.
func NewMemoryKV() *MemoryKV {
	return &MemoryKV{vals: map[string]KeyValue{}, hub: hub.New[KVEvent](4096, 1024, 0)}
}

var errClosed = errors.New("state store is closed")

func (m *MemoryKV) Get(ctx context.Context, key string) (KeyValue, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return KeyValue{}, false, errClosed
	}
	kv, ok := m.vals[key]
	return cloneKV(kv), ok, nil
}

func cloneKV(kv KeyValue) KeyValue {
	kv.Value = slices.Clone(kv.Value)
	return kv
}

func (m *MemoryKV) List(ctx context.Context, r KeyRange) ([]KeyValue, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, 0, errClosed
	}
	m.tidy()
	from, to := r.Bounds()
	i, _ := slices.BinarySearch(m.keys, from)
	var out []KeyValue
	for ; i < len(m.keys); i++ {
		k := m.keys[i]
		if to != "" && k >= to {
			break
		}
		out = append(out, cloneKV(m.vals[k]))
		if r.Limit > 0 && len(out) == r.Limit {
			break
		}
	}
	return out, m.rev, nil
}

func (m *MemoryKV) Txn(ctx context.Context, t Txn) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, false, errClosed
	}
	for _, c := range t.If {
		if m.vals[c.Key].ModRev != c.ModRev {
			return m.rev, false, nil
		}
	}
	m.rev++
	evs := m.apply(t.Then)
	m.hub.Publish(m.rev, evs)
	return m.rev, true, nil
}

// tidy sorts keys and drops those deleted since.
func (m *MemoryKV) tidy() {
	if !m.dirty {
		return
	}
	slices.Sort(m.keys)
	m.keys = slices.Compact(m.keys)
	m.keys = slices.DeleteFunc(m.keys, func(k string) bool { _, ok := m.vals[k]; return !ok })
	m.dirty = false
}

func (m *MemoryKV) apply(ops []Op) []KVEvent {
	var evs []KVEvent
	for _, op := range ops {
		switch {
		case op.Delete && op.End != "":
			m.tidy()
			i, _ := slices.BinarySearch(m.keys, op.Key)
			for j := i; j < len(m.keys) && m.keys[j] < op.End; j++ {
				delete(m.vals, m.keys[j])
				evs = append(evs, KVEvent{Key: m.keys[j], ModRev: m.rev, Delete: true})
				m.dirty = true
			}
		case op.Delete:
			if _, ok := m.vals[op.Key]; ok {
				delete(m.vals, op.Key)
				evs = append(evs, KVEvent{Key: op.Key, ModRev: m.rev, Delete: true})
				m.dirty = true
			}
		default:
			if _, ok := m.vals[op.Key]; !ok {
				if n := len(m.keys); n > 0 && op.Key <= m.keys[n-1] {
					m.dirty = true
				}
				m.keys = append(m.keys, op.Key)
			}
			v := slices.Clone(op.Value)
			m.vals[op.Key] = KeyValue{Key: op.Key, Value: v, ModRev: m.rev}
			evs = append(evs, KVEvent{Key: op.Key, Value: v, ModRev: m.rev})
		}
	}
	return evs
}

func (m *MemoryKV) Watch(ctx context.Context, prefix string, fromRev int64) (<-chan KVEvent, error) {
	return watchHub(ctx, m.hub, prefix, fromRev)
}

// watchHub adapts a hub subscription to the KV.Watch contract; the bbolt
// backend has its own copy of these few lines.
func watchHub(ctx context.Context, h *hub.Hub[KVEvent], prefix string, fromRev int64) (<-chan KVEvent, error) {
	out := make(chan KVEvent, 64)
	deliver := func(it hub.Item[KVEvent]) bool {
		select {
		case out <- it.E:
			return true
		case <-ctx.Done():
			return false
		}
	}
	end := func(err error) {
		if err != nil {
			if errors.Is(err, hub.ErrLagged) {
				err = ErrWatchLagged
			}
			select {
			case out <- KVEvent{Err: err}:
			case <-ctx.Done():
			}
		}
		close(out)
	}
	match := func(e KVEvent) bool { return strings.HasPrefix(e.Key, prefix) }
	if err := h.Subscribe(ctx, fromRev, match, deliver, end); err != nil {
		if errors.Is(err, hub.ErrLagged) {
			return nil, fmt.Errorf("watch from revision %d: %w", fromRev, ErrWatchLagged)
		}
		return nil, err
	}
	return out, nil
}

func (m *MemoryKV) Dump(ctx context.Context, fn func(KeyValue) error) (int64, error) {
	kvs, rev, err := m.List(ctx, KeyRange{})
	if err != nil {
		return 0, err
	}
	for _, kv := range kvs {
		if err := fn(kv); err != nil {
			return 0, err
		}
	}
	return rev, nil
}

func (m *MemoryKV) Replace(ctx context.Context, kvs []KeyValue) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	m.rev++
	ops := []Op{{Key: "", Delete: true, End: "\xff\xff\xff\xff"}}
	for _, kv := range kvs {
		ops = append(ops, Put(kv.Key, kv.Value))
	}
	m.hub.Publish(m.rev, m.apply(ops))
	return nil
}

func (m *MemoryKV) Election(name string) (Election, error) { return NewSingleElection(), nil }

func (m *MemoryKV) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.hub.Close(errClosed)
	return nil
}

// SingleElection is the election of a store only one process can open (bbolt,
// memory): that process is always the leader.
type SingleElection struct {
	mu     sync.Mutex
	leader bool
	done   chan struct{}
}

// NewSingleElection returns an election this process wins at once.
func NewSingleElection() *SingleElection { return &SingleElection{done: make(chan struct{})} }

func (e *SingleElection) Campaign(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leader {
		e.leader = true
		e.done = make(chan struct{})
	}
	return nil
}

func (e *SingleElection) Resign(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.leader {
		e.leader = false
		close(e.done)
	}
	return nil
}

func (e *SingleElection) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leader
}

func (e *SingleElection) Done() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.done
}
