package inventory

import (
	"context"
	"fmt"
	"strings"
)

func (s *store) Watch(ctx context.Context, opts WatchOptions) (<-chan Change, error) {
	want := map[Kind]bool{}
	for _, k := range opts.Kinds {
		want[k] = true
	}
	all := len(want) == 0
	// One KV watch over the whole store keeps changes of different kinds in
	// commit order; index keys are filtered out here.
	ctx, cancel := context.WithCancel(ctx)
	in, err := s.kv.Watch(ctx, "", opts.FromRevision)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch: %w", err)
	}
	out := make(chan Change, 64)
	go func() {
		defer cancel()
		defer close(out)
		for ev := range in {
			var c Change
			if ev.Err != nil {
				c = Change{Err: ev.Err}
			} else {
				// The kind is in the key: a change this watch does not
				// want is dropped before its value is decoded (during a
				// boot storm nearly every change is an event, which the
				// boot policy's machine watch would decode to drop).
				if k, ok := kindOf(ev); !ok || (!all && !want[k]) {
					continue
				}
				c, _ = toChange(ev)
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
			if c.Err != nil {
				return
			}
		}
	}()
	return out, nil
}

// kindOf is the kind of record ev changes, if it is a change of a primary
// record a watch reports (not of an index key, nor a trimmed event).
func kindOf(ev KVEvent) (Kind, bool) {
	switch {
	case strings.HasPrefix(ev.Key, pfxMachine):
		return KindMachine, true
	case strings.HasPrefix(ev.Key, pfxLease):
		return KindLease, true
	case strings.HasPrefix(ev.Key, pfxEvent):
		return KindEvent, !ev.Delete
	case strings.HasPrefix(ev.Key, pfxRun), strings.HasPrefix(ev.Key, pfxStep):
		return KindApply, true
	}
	return "", false
}

// toChange turns a KV change of a primary record into a Change.
func toChange(ev KVEvent) (Change, bool) {
	k, ok := kindOf(ev)
	if !ok {
		return Change{}, false
	}
	c := Change{Kind: k, Deleted: ev.Delete, Revision: ev.ModRev}
	kv := KeyValue{Key: ev.Key, Value: ev.Value, ModRev: ev.ModRev}
	var err error
	switch {
	case strings.HasPrefix(ev.Key, pfxMachine):
		m := Machine{Name: ev.Key[len(pfxMachine):]}
		if !ev.Delete {
			m, err = decodeMachine(kv)
		}
		c.Machine = &m
	case strings.HasPrefix(ev.Key, pfxLease):
		l := Lease{MAC: ev.Key[len(pfxLease):]}
		if !ev.Delete {
			l, err = decodeLease(kv)
		}
		c.Lease = &l
	case strings.HasPrefix(ev.Key, pfxEvent):
		var e Event
		e, err = decode[Event](kv)
		c.Event = &e
	case strings.HasPrefix(ev.Key, pfxRun):
		r := ApplyRun{ID: ev.Key[len(pfxRun):]}
		if !ev.Delete {
			r, err = decode[ApplyRun](kv)
			r.Revision = ev.ModRev
		}
		c.ApplyRun = &r
	case strings.HasPrefix(ev.Key, pfxStep):
		id, machine, _ := strings.Cut(ev.Key[len(pfxStep):], "/")
		c.RunID = id
		st := ApplyStep{Machine: machine}
		if !ev.Delete {
			st, err = decode[ApplyStep](kv)
			st.Revision = ev.ModRev
		}
		c.ApplyStep = &st
	}
	if err != nil {
		c.Err = err
	}
	return c, true
}
