package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// The key layout, in one place. Primary records and their indexes are always
// written in one Txn, so an index never points at a missing record.
const (
	keySchema   = "meta/schema"
	keyEventSeq = "meta/eventseq"
	pfxMachine  = "machines/" // machines/<name> → Machine
	pfxMAC      = "macs/"     // macs/<mac> → machine name
	pfxLease    = "leases/"   // leases/<mac> → Lease
	pfxIP       = "ips/"      // ips/<8 hex digits> → Lease (same record)
	pfxEvent    = "events/"   // events/<20-digit seq> → Event
	pfxEvName   = "evn/"      // evn/<machine>/<seq> → Event
	pfxEvMAC    = "evm/"      // evm/<mac>/<seq> → Event
	pfxRun      = "applies/"  // applies/<id> → ApplyRun
	pfxStep     = "steps/"    // steps/<id>/<machine> → ApplyStep
)

func seqKey(seq int64) string { return fmt.Sprintf("%020d", seq) }

// validName keeps names usable as one key segment.
func validName(s string) bool {
	return s != "" && len(s) <= 253 && !strings.ContainsAny(s, "/\x00\n")
}

func sortStrings(s []string) { sort.Strings(s) }

func decode[T any](kv KeyValue) (T, error) {
	var v T
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return v, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return v, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own plain structs are marshalled; a failure is a bug.
		panic(fmt.Sprintf("inventory: marshal %T: %v", v, err))
	}
	return b
}

// ---- machines

func (s *store) Machine(ctx context.Context, name string) (Machine, error) {
	kv, ok, err := s.kv.Get(ctx, pfxMachine+name)
	if err != nil {
		return Machine{}, fmt.Errorf("get machine %s: %w", name, err)
	}
	if !ok {
		return Machine{}, fmt.Errorf("machine %s: %w", name, ErrNotFound)
	}
	return decodeMachine(kv)
}

func decodeMachine(kv KeyValue) (Machine, error) {
	m, err := decode[Machine](kv)
	m.Revision = kv.ModRev
	return m, err
}

func (s *store) MachineByMAC(ctx context.Context, mac string) (Machine, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	kv, ok, err := s.kv.Get(ctx, pfxMAC+mac)
	if err != nil {
		return Machine{}, fmt.Errorf("get machine by mac %s: %w", mac, err)
	}
	if !ok {
		return Machine{}, fmt.Errorf("machine with mac %s: %w", mac, ErrNotFound)
	}
	return s.Machine(ctx, string(kv.Value))
}

func (s *store) Machines(ctx context.Context) ([]Machine, int64, error) {
	kvs, rev, err := s.kv.List(ctx, KeyRange{Prefix: pfxMachine})
	if err != nil {
		return nil, 0, fmt.Errorf("list machines: %w", err)
	}
	out := make([]Machine, 0, len(kvs))
	for _, kv := range kvs {
		m, err := decodeMachine(kv)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, m)
	}
	return out, rev, nil
}

func (s *store) PutMachine(ctx context.Context, m Machine) (Machine, error) {
	if !validName(m.Name) {
		return Machine{}, fmt.Errorf("machine name %q: %w", m.Name, ErrInvalid)
	}
	mac, err := NormalizeMAC(m.MAC)
	if err != nil {
		return Machine{}, fmt.Errorf("machine %s: %w", m.Name, err)
	}
	m.MAC = mac
	if m.State == "" {
		m.State = StateUnknown
	}
	key := pfxMachine + m.Name
	cur, found, err := s.kv.Get(ctx, key)
	if err != nil {
		return Machine{}, fmt.Errorf("put machine %s: %w", m.Name, err)
	}
	if cur.ModRev != m.Revision {
		return Machine{}, conflict("machine", m.Name, m.Revision, cur.ModRev)
	}
	conds := []Cond{{Key: key, ModRev: m.Revision}}
	var ops []Op
	if found {
		old, err := decodeMachine(cur)
		if err != nil {
			return Machine{}, err
		}
		if old.MAC != mac {
			ops = append(ops, Del(pfxMAC+old.MAC))
		}
	}
	idx, idxFound, err := s.kv.Get(ctx, pfxMAC+mac)
	if err != nil {
		return Machine{}, fmt.Errorf("put machine %s: %w", m.Name, err)
	}
	if idxFound && string(idx.Value) != m.Name {
		return Machine{}, fmt.Errorf("machine %s: mac %s already belongs to machine %s: %w", m.Name, mac, idx.Value, ErrConflict)
	}
	conds = append(conds, Cond{Key: pfxMAC + mac, ModRev: idx.ModRev})
	ops = append(ops, Put(key, mustJSON(m)))
	if !idxFound {
		ops = append(ops, Put(pfxMAC+mac, []byte(m.Name)))
	}
	rev, ok, err := s.kv.Txn(ctx, Txn{If: conds, Then: ops})
	if err != nil {
		return Machine{}, fmt.Errorf("put machine %s: %w", m.Name, err)
	}
	if !ok {
		return Machine{}, fmt.Errorf("machine %s (or its mac %s) changed meanwhile: %w", m.Name, mac, ErrConflict)
	}
	m.Revision = rev
	return m, nil
}

func conflict(what, name string, want, have int64) error {
	switch {
	case want == 0:
		return fmt.Errorf("%s %s already exists (revision %d): %w", what, name, have, ErrConflict)
	case have == 0:
		return fmt.Errorf("%s %s: %w (expected revision %d, it no longer exists)", what, name, ErrConflict, want)
	}
	return fmt.Errorf("%s %s: %w (expected revision %d, stored %d)", what, name, ErrConflict, want, have)
}

func (s *store) DeleteMachine(ctx context.Context, name string, rev int64) error {
	cur, found, err := s.kv.Get(ctx, pfxMachine+name)
	if err != nil {
		return fmt.Errorf("delete machine %s: %w", name, err)
	}
	if !found {
		return fmt.Errorf("machine %s: %w", name, ErrNotFound)
	}
	if rev == 0 {
		rev = cur.ModRev
	}
	if cur.ModRev != rev {
		return conflict("machine", name, rev, cur.ModRev)
	}
	m, err := decodeMachine(cur)
	if err != nil {
		return err
	}
	_, ok, err := s.kv.Txn(ctx, Txn{
		If:   []Cond{{Key: pfxMachine + name, ModRev: rev}},
		Then: []Op{Del(pfxMachine + name), Del(pfxMAC + m.MAC)},
	})
	if err != nil {
		return fmt.Errorf("delete machine %s: %w", name, err)
	}
	if !ok {
		return fmt.Errorf("machine %s changed meanwhile: %w", name, ErrConflict)
	}
	return nil
}

// ---- events

func (s *store) AppendEvent(ctx context.Context, e Event) (Event, error) {
	evs, err := s.AppendEvents(ctx, []Event{e})
	if err != nil {
		return Event{}, err
	}
	return evs[0], nil
}

func (s *store) AppendEvents(ctx context.Context, evs []Event) ([]Event, error) {
	out := make([]Event, len(evs))
	for i, e := range evs {
		var err error
		if out[i], err = s.checkEvent(e); err != nil {
			return nil, err
		}
	}
	if err := s.events.append(ctx, s, out); err != nil {
		return out, err
	}
	return out, nil
}

// checkEvent validates e and fills in what the store sets: the time if
// unset, in UTC, and the MAC in its normal form.
func (s *store) checkEvent(e Event) (Event, error) {
	if e.Kind == "" {
		return Event{}, fmt.Errorf("event without kind: %w", ErrInvalid)
	}
	if e.Machine != "" && !validName(e.Machine) {
		return Event{}, fmt.Errorf("event machine %q: %w", e.Machine, ErrInvalid)
	}
	if e.MAC != "" {
		mac, err := NormalizeMAC(e.MAC)
		if err != nil {
			return Event{}, fmt.Errorf("event: %w", err)
		}
		e.MAC = mac
	}
	if e.Time.IsZero() {
		e.Time = s.opts.Now()
	}
	e.Time = e.Time.UTC()
	return e, nil
}

// appendEvents writes evs with the next sequence numbers, in order, in one
// Txn. The sequence counter is one key every appender CASes, which makes Seq
// gap-free and ordered across servers; appending a batch under one CAS
// keeps that while concurrent appenders in this process share one write
// instead of each retrying against the others.
func (s *store) appendEvents(ctx context.Context, evs []Event) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ctr, _, err := s.kv.Get(ctx, keyEventSeq)
		if err != nil {
			return fmt.Errorf("append event: %w", err)
		}
		var last int64
		if len(ctr.Value) > 0 {
			if last, err = strconv.ParseInt(string(ctr.Value), 10, 64); err != nil {
				return fmt.Errorf("event counter %q: %w", ctr.Value, ErrInvalid)
			}
		}
		ops := []Op{Put(keyEventSeq, []byte(strconv.FormatInt(last+int64(len(evs)), 10)))}
		for i := range evs {
			e := &evs[i]
			e.Seq = last + 1 + int64(i)
			body := mustJSON(e)
			ops = append(ops, Put(pfxEvent+seqKey(e.Seq), body))
			if e.Machine != "" {
				ops = append(ops, Put(pfxEvName+e.Machine+"/"+seqKey(e.Seq), body))
			}
			if e.MAC != "" {
				ops = append(ops, Put(pfxEvMAC+e.MAC+"/"+seqKey(e.Seq), body))
			}
		}
		// Each trimmed event costs up to three deletes; what is left of the
		// operation budget bounds how many go in this Txn.
		trim, err := s.trimOps(ctx, last+int64(len(evs)), max(1, (s.txnOps-len(ops))/3))
		if err != nil {
			return err
		}
		ops = append(ops, trim...)
		_, ok, err := s.kv.Txn(ctx, Txn{If: []Cond{{Key: keyEventSeq, ModRev: ctr.ModRev}}, Then: ops})
		if err != nil {
			return fmt.Errorf("append event: %w", err)
		}
		if ok {
			return nil
		}
	}
}

// trimOps deletes the events that fall out of retention when seq is added:
// at most limit of them, so lowering the retention trims over the next
// appends rather than in one huge transaction (etcd caps operations per
// Txn).
func (s *store) trimOps(ctx context.Context, seq int64, limit int) ([]Op, error) {
	keepFrom := seq - int64(s.opts.EventRetention) + 1
	if keepFrom <= 1 {
		return nil, nil
	}
	old, _, err := s.kv.List(ctx, KeyRange{Prefix: pfxEvent, To: pfxEvent + seqKey(keepFrom), Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("trim events: %w", err)
	}
	var ops []Op
	for _, kv := range old {
		ev, err := decode[Event](kv)
		if err != nil {
			return nil, err
		}
		ops = append(ops, Del(kv.Key))
		if ev.Machine != "" {
			ops = append(ops, Del(pfxEvName+ev.Machine+"/"+seqKey(ev.Seq)))
		}
		if ev.MAC != "" {
			ops = append(ops, Del(pfxEvMAC+ev.MAC+"/"+seqKey(ev.Seq)))
		}
	}
	return ops, nil
}

func (s *store) Events(ctx context.Context, q EventQuery) ([]Event, error) {
	var prefixes []string
	if q.Machine != "" {
		prefixes = append(prefixes, pfxEvName+q.Machine+"/")
	}
	if q.MAC != "" {
		mac, err := NormalizeMAC(q.MAC)
		if err != nil {
			return nil, err
		}
		prefixes = append(prefixes, pfxEvMAC+mac+"/")
	}
	if len(prefixes) == 0 {
		prefixes = []string{pfxEvent}
	}
	seen := map[int64]bool{}
	var out []Event
	for _, p := range prefixes {
		kvs, _, err := s.kv.List(ctx, KeyRange{Prefix: p, From: p + seqKey(q.AfterSeq+1), Limit: q.Limit})
		if err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		for _, kv := range kvs {
			ev, err := decode[Event](kv)
			if err != nil {
				return nil, err
			}
			if !seen[ev.Seq] {
				seen[ev.Seq] = true
				out = append(out, ev)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// ---- apply runs

func (s *store) ApplyRun(ctx context.Context, id string) (ApplyRun, error) {
	kv, ok, err := s.kv.Get(ctx, pfxRun+id)
	if err != nil {
		return ApplyRun{}, fmt.Errorf("get apply run %s: %w", id, err)
	}
	if !ok {
		return ApplyRun{}, fmt.Errorf("apply run %s: %w", id, ErrNotFound)
	}
	return s.withSteps(ctx, kv)
}

func (s *store) withSteps(ctx context.Context, kv KeyValue) (ApplyRun, error) {
	r, err := decode[ApplyRun](kv)
	if err != nil {
		return ApplyRun{}, err
	}
	r.Revision = kv.ModRev
	steps, _, err := s.kv.List(ctx, KeyRange{Prefix: pfxStep + r.ID + "/"})
	if err != nil {
		return ApplyRun{}, fmt.Errorf("list steps of apply run %s: %w", r.ID, err)
	}
	r.Steps = map[string]ApplyStep{}
	for _, skv := range steps {
		st, err := decode[ApplyStep](skv)
		if err != nil {
			return ApplyRun{}, err
		}
		st.Revision = skv.ModRev
		r.Steps[st.Machine] = st
	}
	return r, nil
}

func (s *store) ApplyRuns(ctx context.Context) ([]ApplyRun, error) {
	kvs, _, err := s.kv.List(ctx, KeyRange{Prefix: pfxRun})
	if err != nil {
		return nil, fmt.Errorf("list apply runs: %w", err)
	}
	var out []ApplyRun
	for _, kv := range kvs {
		r, err := s.withSteps(ctx, kv)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *store) PutApplyRun(ctx context.Context, r ApplyRun) (ApplyRun, error) {
	if !validName(r.ID) {
		return ApplyRun{}, fmt.Errorf("apply run id %q: %w", r.ID, ErrInvalid)
	}
	rev, err := s.cas(ctx, "apply run", r.ID, pfxRun+r.ID, r.Revision, mustJSON(r))
	if err != nil {
		return ApplyRun{}, err
	}
	r.Revision = rev
	return r, nil
}

func (s *store) PutApplyStep(ctx context.Context, id string, st ApplyStep) (ApplyStep, error) {
	if !validName(st.Machine) {
		return ApplyStep{}, fmt.Errorf("apply step machine %q: %w", st.Machine, ErrInvalid)
	}
	if _, ok, err := s.kv.Get(ctx, pfxRun+id); err != nil {
		return ApplyStep{}, fmt.Errorf("put apply step: %w", err)
	} else if !ok {
		return ApplyStep{}, fmt.Errorf("apply run %s: %w", id, ErrNotFound)
	}
	if st.UpdatedAt.IsZero() {
		st.UpdatedAt = s.opts.Now().UTC()
	}
	rev, err := s.cas(ctx, "apply step", id+"/"+st.Machine, pfxStep+id+"/"+st.Machine, st.Revision, mustJSON(st))
	if err != nil {
		return ApplyStep{}, err
	}
	st.Revision = rev
	return st, nil
}

// cas writes one unindexed record if it is still at rev.
func (s *store) cas(ctx context.Context, what, name, key string, rev int64, val []byte) (int64, error) {
	nrev, ok, err := s.kv.Txn(ctx, Txn{If: []Cond{{Key: key, ModRev: rev}}, Then: []Op{Put(key, val)}})
	if err != nil {
		return 0, fmt.Errorf("put %s %s: %w", what, name, err)
	}
	if !ok {
		cur, _, err := s.kv.Get(ctx, key)
		if err != nil {
			return 0, fmt.Errorf("put %s %s: %w", what, name, err)
		}
		return 0, conflict(what, name, rev, cur.ModRev)
	}
	return nrev, nil
}
