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
				var ok bool
				c, ok = toChange(ev)
				if !ok || (!all && !want[c.Kind]) {
					continue
				}
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

// toChange turns a KV change of a primary record into a Change.
func toChange(ev KVEvent) (Change, bool) {
	c := Change{Deleted: ev.Delete, Revision: ev.ModRev}
	kv := KeyValue{Key: ev.Key, Value: ev.Value, ModRev: ev.ModRev}
	var err error
	switch {
	case strings.HasPrefix(ev.Key, pfxMachine):
		c.Kind = KindMachine
		m := Machine{Name: ev.Key[len(pfxMachine):]}
		if !ev.Delete {
			m, err = decodeMachine(kv)
		}
		c.Machine = &m
	case strings.HasPrefix(ev.Key, pfxLease):
		c.Kind = KindLease
		l := Lease{MAC: ev.Key[len(pfxLease):]}
		if !ev.Delete {
			l, err = decodeLease(kv)
		}
		c.Lease = &l
	case strings.HasPrefix(ev.Key, pfxEvent):
		if ev.Delete {
			return c, false // retention trimming is not news
		}
		c.Kind = KindEvent
		var e Event
		e, err = decode[Event](kv)
		c.Event = &e
	case strings.HasPrefix(ev.Key, pfxRun):
		c.Kind = KindApply
		r := ApplyRun{ID: ev.Key[len(pfxRun):]}
		if !ev.Delete {
			r, err = decode[ApplyRun](kv)
			r.Revision = ev.ModRev
		}
		c.ApplyRun = &r
	case strings.HasPrefix(ev.Key, pfxStep):
		c.Kind = KindApply
		id, machine, _ := strings.Cut(ev.Key[len(pfxStep):], "/")
		c.RunID = id
		st := ApplyStep{Machine: machine}
		if !ev.Delete {
			st, err = decode[ApplyStep](kv)
			st.Revision = ev.ModRev
		}
		c.ApplyStep = &st
	default:
		return c, false
	}
	if err != nil {
		c.Err = err
	}
	return c, true
}
