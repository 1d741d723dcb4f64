// Package inventory is metal's observed state: machines, DHCP leases, the
// event log and apply runs, in one Store with revisions, compare-and-swap on
// every write, and watches.
//
// The Store is implemented once, here, over a small transactional key-value
// contract (KV). Backends provide a KV: inventory/bolt (one file, the
// embedded default), inventory/etcd (several metal servers), and MemoryKV
// (tests). inventory/backend opens a store from the site's state URL;
// inventory/storetest is the conformance suite every backend runs;
// inventory/backup writes and restores snapshots over SFTP and keeps a
// disaster-recovery standby.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Store is metal's observed state. Every write is compare-and-swap: records
// carry the Revision they were read at, and a write with a stale Revision
// fails with ErrConflict. Missing records give ErrNotFound.
type Store interface {
	// Machine returns the machine called name.
	Machine(ctx context.Context, name string) (Machine, error)
	// MachineByMAC returns the machine whose (declared) MAC is mac.
	MachineByMAC(ctx context.Context, mac string) (Machine, error)
	// Machines returns every machine sorted by name, and the revision they
	// were read at (watch from it to miss nothing).
	Machines(ctx context.Context) ([]Machine, int64, error)
	// PutMachine creates (m.Revision 0) or replaces (m.Revision as read) a
	// machine and returns it with its new Revision. A MAC already used by
	// another machine is a conflict.
	PutMachine(ctx context.Context, m Machine) (Machine, error)
	// DeleteMachine removes a machine last written at rev (0: any revision).
	DeleteMachine(ctx context.Context, name string, rev int64) error

	// Lease returns the lease held by mac (expired or not).
	Lease(ctx context.Context, mac string) (Lease, error)
	// LeaseByIP returns the lease of address ip.
	LeaseByIP(ctx context.Context, ip netip.Addr) (Lease, error)
	// Leases returns every lease sorted by address, and the revision.
	Leases(ctx context.Context) ([]Lease, int64, error)
	// AllocateLease atomically gives req.MAC an address of the range: its
	// current one if it has one there, else a free or expired one, never one
	// held (unexpired) by another MAC, even with several metal servers
	// allocating from one etcd at once.
	AllocateLease(ctx context.Context, req AllocateRequest) (Lease, error)
	// ReleaseLease frees mac's lease (DHCPRELEASE). No lease is not an error.
	ReleaseLease(ctx context.Context, mac string) error

	// AppendEvent adds e to the log and returns it with its Seq. The log
	// keeps the newest Options.EventRetention events.
	AppendEvent(ctx context.Context, e Event) (Event, error)
	// AppendEvents adds evs to the log in their order, as one write where
	// the backend allows (else in order over several), and returns them
	// with their Seqs. On error, those returned without a Seq were not
	// written; with an invalid event, none was.
	AppendEvents(ctx context.Context, evs []Event) ([]Event, error)
	// Events returns events in Seq order.
	Events(ctx context.Context, q EventQuery) ([]Event, error)

	// ApplyRun returns one apply run with its per-machine steps.
	ApplyRun(ctx context.Context, id string) (ApplyRun, error)
	// ApplyRuns returns every apply run (with steps), oldest ID first.
	ApplyRuns(ctx context.Context) ([]ApplyRun, error)
	// PutApplyRun creates or updates a run (CAS on r.Revision). Steps are
	// not written; use PutApplyStep.
	PutApplyRun(ctx context.Context, r ApplyRun) (ApplyRun, error)
	// PutApplyStep creates or updates one machine's step of run id (CAS on
	// s.Revision). The run must exist.
	PutApplyStep(ctx context.Context, id string, s ApplyStep) (ApplyStep, error)

	// APITokens returns every API token (hashes, never secrets), sorted
	// by name.
	APITokens(ctx context.Context) ([]APIToken, error)
	// PutAPIToken creates (t.Revision 0) or updates (CAS) a token.
	PutAPIToken(ctx context.Context, t APIToken) (APIToken, error)
	// DeleteAPIToken removes a token (revoke).
	DeleteAPIToken(ctx context.Context, name string) error

	// Servers returns the site's metal serves (where machines reach each),
	// the most recently seen first; PutServer records one under its URL.
	Servers(ctx context.Context) ([]Server, error)
	PutServer(ctx context.Context, srv Server) (Server, error)

	// Watch streams changes of the given kinds (all if none) after
	// opts.FromRevision (0: from now). The channel closes when ctx ends; a
	// broken watch sends a last Change with Err set (ErrWatchLagged: list
	// again and re-watch).
	Watch(ctx context.Context, opts WatchOptions) (<-chan Change, error)

	// Election returns the leader election called name ("controller").
	Election(name string) (Election, error)

	// Dump calls fn for every record of one consistent view (for backups).
	Dump(ctx context.Context, fn func(Record) error) (DumpInfo, error)
	// Restore loads records written by Dump. Into an empty store unless
	// opts.Replace; a snapshot of a newer schema is refused, an older one is
	// migrated.
	Restore(ctx context.Context, records []Record, opts RestoreOptions) error

	// SchemaVersion is the schema of the open store (always
	// CurrentSchemaVersion once opened).
	SchemaVersion() int
	Close() error
}

// Kind is a kind of record, for watches.
type Kind string

const (
	KindMachine Kind = "machine"
	KindLease   Kind = "lease"
	KindEvent   Kind = "event"
	KindApply   Kind = "apply" // apply runs and their steps
)

// WatchOptions selects what a watch sees.
type WatchOptions struct {
	Kinds        []Kind
	FromRevision int64
}

// Change is one change seen by a watch. Exactly one of the record pointers is
// set (for a delete, it holds only the record's key fields).
type Change struct {
	Kind      Kind
	Deleted   bool
	Revision  int64
	Machine   *Machine
	Lease     *Lease
	Event     *Event
	ApplyRun  *ApplyRun
	ApplyStep *ApplyStep
	// RunID names the run of an ApplyStep.
	RunID string
	Err   error
}

// Record is one raw entry of the store as a backup carries it. Its meaning
// is private to this package; backups only copy and checksum it.
type Record struct {
	Key   string `json:"k"`
	Value []byte `json:"v"`
}

// DumpInfo describes a dump.
type DumpInfo struct {
	Revision int64
	Schema   int
	Records  int
}

// RestoreOptions tunes Restore.
type RestoreOptions struct {
	// Replace drops what the store holds first (the standby replica).
	Replace bool
}

// Options tunes a store. The zero value is usable.
type Options struct {
	Logger *slog.Logger
	// EventRetention is how many events the log keeps (default 100000).
	EventRetention int
	// Now is the clock (default time.Now); tests pin it.
	Now func() time.Time
}

// CurrentSchemaVersion is the layout this metal reads and writes. Bump it
// with a migration in migrations whenever the meaning of keys changes.
const CurrentSchemaVersion = 1

// Migration moves a store from version From to From+1 in place.
type Migration struct {
	From int
	Name string
	Up   func(ctx context.Context, kv KV) error
}

// migrations is the ordered list of schema upgrades; schema 1 is the first
// layout, so it is empty today. It is a table, not state: nothing writes it.
func migrations() []Migration { return nil }

// Open opens the store kept in kv: it creates the schema in an empty KV,
// migrates an older one, and refuses one written by a newer metal. The
// store owns kv from then on (Close closes it).
func Open(ctx context.Context, kv KV, opts Options) (Store, error) {
	return openWith(ctx, kv, opts, CurrentSchemaVersion, migrations())
}

func openWith(ctx context.Context, kv KV, opts Options, current int, migs []Migration) (*store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.EventRetention <= 0 {
		opts.EventRetention = 100000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &store{kv: kv, opts: opts, log: opts.Logger, current: current, migs: migs}
	s.events.batch, s.txnOps = eventLimits(kv)
	// A Txn trims only events stored before it: a batch longer than the
	// retention would leave its own first events past it.
	s.events.batch = min(s.events.batch, opts.EventRetention)
	if err := s.prepareSchema(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

type store struct {
	kv      KV
	opts    Options
	log     *slog.Logger
	current int
	migs    []Migration
	events  eventQueue
	// txnOps is the most operations an events Txn carries (eventLimits).
	txnOps int
}

func (s *store) SchemaVersion() int { return s.current }
func (s *store) Close() error       { return s.kv.Close() }

func (s *store) Election(name string) (Election, error) {
	if name == "" || !validName(name) {
		return nil, fmt.Errorf("election name %q: %w", name, ErrInvalid)
	}
	return s.kv.Election(name)
}

// prepareSchema writes, checks or migrates the schema version.
func (s *store) prepareSchema(ctx context.Context) error {
	for {
		v, rev, err := s.readSchema(ctx)
		if err != nil {
			return err
		}
		if rev == 0 {
			any, _, err := s.kv.List(ctx, KeyRange{Limit: 1})
			if err != nil {
				return fmt.Errorf("read state store: %w", err)
			}
			if len(any) > 0 {
				return fmt.Errorf("state store holds data but no schema version (key %s): not a metal store? %w", keySchema, ErrInvalid)
			}
			_, ok, err := s.kv.Txn(ctx, Txn{If: []Cond{{Key: keySchema}}, Then: []Op{Put(keySchema, fmt.Appendf(nil, "%d", s.current))}})
			if err != nil {
				return fmt.Errorf("initialise state store: %w", err)
			}
			if ok {
				s.log.Info("initialised state store", "schema", s.current)
				return nil
			}
			continue // another server initialised it first: check what it wrote
		}
		if err := checkSchema(v, s.current); err != nil {
			return err
		}
		if v == s.current {
			return nil
		}
		if err := s.migrate(ctx, v, rev); err != nil {
			return err
		}
	}
}

func checkSchema(v, current int) error {
	if v > current {
		return fmt.Errorf("state store schema version %d is newer than this metal understands (%d): "+
			"it was written by a newer metal; upgrade this binary rather than downgrade the store: %w",
			v, current, ErrSchemaTooNew)
	}
	return nil
}

func (s *store) readSchema(ctx context.Context) (int, int64, error) {
	kv, ok, err := s.kv.Get(ctx, keySchema)
	if err != nil {
		return 0, 0, fmt.Errorf("read schema version: %w", err)
	}
	if !ok {
		return 0, 0, nil
	}
	var v int
	if _, err := fmt.Sscanf(string(kv.Value), "%d", &v); err != nil {
		return 0, 0, fmt.Errorf("schema version %q: %w", kv.Value, ErrInvalid)
	}
	return v, kv.ModRev, nil
}

// migrate runs the migrations from version v up to the current one. Each step
// bumps the version with a CAS on the version key, so two servers starting
// together run each step once.
func (s *store) migrate(ctx context.Context, v int, rev int64) error {
	for v < s.current {
		var step *Migration
		for i := range s.migs {
			if s.migs[i].From == v {
				step = &s.migs[i]
			}
		}
		if step == nil {
			return fmt.Errorf("no migration from state store schema %d to %d", v, v+1)
		}
		s.log.Info("migrating state store", "from", v, "to", v+1, "migration", step.Name)
		if err := step.Up(ctx, s.kv); err != nil {
			return fmt.Errorf("migrate schema %d to %d (%s): %w", v, v+1, step.Name, err)
		}
		nrev, ok, err := s.kv.Txn(ctx, Txn{If: []Cond{{Key: keySchema, ModRev: rev}}, Then: []Op{Put(keySchema, fmt.Appendf(nil, "%d", v+1))}})
		if err != nil {
			return fmt.Errorf("record schema %d: %w", v+1, err)
		}
		if !ok {
			return fmt.Errorf("schema version changed while migrating from %d: %w", v, ErrConflict)
		}
		v, rev = v+1, nrev
	}
	return nil
}

// UpdateMachine reads machine name, applies fn and writes it back, retrying
// when another writer got there first. fn may run several times.
func UpdateMachine(ctx context.Context, s Store, name string, fn func(*Machine) error) (Machine, error) {
	for attempt := 0; ; attempt++ {
		m, err := s.Machine(ctx, name)
		if err != nil {
			return Machine{}, err
		}
		if err := fn(&m); err != nil {
			return Machine{}, err
		}
		out, err := s.PutMachine(ctx, m)
		if errors.Is(err, ErrConflict) && attempt < 32 && ctx.Err() == nil {
			continue
		}
		return out, err
	}
}
