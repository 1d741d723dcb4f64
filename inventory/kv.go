package inventory

import (
	"context"
	"errors"
)

// Sentinel errors. Backends and the store wrap them; test with errors.Is.
var (
	// ErrNotFound: no such machine, lease, apply run.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the expected revision did not match (someone else wrote
	// first), or the record already exists on create. Re-read and retry.
	ErrConflict = errors.New("revision conflict")
	// ErrInvalid: the record itself is wrong (bad MAC, empty name, illegal
	// lifecycle move).
	ErrInvalid = errors.New("invalid")
	// ErrPoolExhausted: every address of the range is held by another MAC.
	ErrPoolExhausted = errors.New("address pool exhausted")
	// ErrSchemaTooNew: the store was written by a newer metal.
	ErrSchemaTooNew = errors.New("state store schema is newer than this metal")
	// ErrNotEmpty: a restore was asked into a store that already holds data.
	ErrNotEmpty = errors.New("state store is not empty")
	// ErrWatchLagged ends a watch whose reader fell too far behind (or asked
	// for a revision the backend no longer keeps). List again and re-watch.
	ErrWatchLagged = errors.New("watch fell behind")
)

// KV is the small transactional key-value contract a backend implements.
// All of the inventory's meaning (records, indexes, CAS, allocation,
// retention, schema) lives above it in one place, so the backends cannot
// drift apart; the conformance suite (inventory/storetest) checks each one.
//
// Revisions are store-wide, start at 1 with the first write, and increase by
// one per successful Txn; every key remembers the revision it was last
// written at (ModRev).
type KV interface {
	// Get returns the key, or found=false.
	Get(ctx context.Context, key string) (kv KeyValue, found bool, err error)
	// List returns the keys of r in key order, and the store revision they
	// were read at.
	List(ctx context.Context, r KeyRange) ([]KeyValue, int64, error)
	// Txn applies Then atomically if every condition of If holds, and
	// returns the new revision. ok=false (with no error) means a condition
	// failed and nothing was written.
	Txn(ctx context.Context, t Txn) (rev int64, ok bool, err error)
	// Watch streams changes to keys under prefix, starting after revision
	// fromRev (0: from now). The channel is closed when ctx ends; a failure
	// is sent as a last KVEvent with Err set.
	Watch(ctx context.Context, prefix string, fromRev int64) (<-chan KVEvent, error)
	// Dump calls fn for every key, in key order, from one consistent view,
	// and returns that view's revision.
	Dump(ctx context.Context, fn func(KeyValue) error) (int64, error)
	// Replace makes the store hold exactly kvs. Atomic where the backend can
	// do it (bbolt, memory); in bounded batches on etcd.
	Replace(ctx context.Context, kvs []KeyValue) error
	// Election returns the leader election called name.
	Election(name string) (Election, error)
	Close() error
}

// TxnLimiter is a KV that says how many operations one Txn may carry. A
// KV without it is taken to have etcd's default cap (128).
type TxnLimiter interface {
	MaxTxnOps() int
}

// KeyValue is one key with its value and the revision it was last written at.
type KeyValue struct {
	Key    string
	Value  []byte
	ModRev int64
}

// KeyRange selects the keys starting with Prefix, from From (inclusive,
// default: the first) to To (exclusive, default: past the last). Limit caps
// the count (0: all).
type KeyRange struct {
	Prefix string
	From   string
	To     string
	Limit  int
}

// Txn is a compare-and-swap transaction.
type Txn struct {
	If   []Cond
	Then []Op
}

// Cond holds when Key was last written at ModRev; ModRev 0 means "Key does
// not exist".
type Cond struct {
	Key    string
	ModRev int64
}

// Op writes Value to Key, or with Delete removes Key (or, with End set, every
// key in [Key, End)).
type Op struct {
	Key    string
	Value  []byte
	Delete bool
	End    string
}

// Put and Del build Ops.
func Put(key string, value []byte) Op { return Op{Key: key, Value: value} }
func Del(key string) Op               { return Op{Key: key, Delete: true} }

// KVEvent is one change seen by a KV watch.
type KVEvent struct {
	Key    string
	Value  []byte
	ModRev int64
	Delete bool
	Err    error
}

// Election is leader election among the metal servers sharing a store. The
// leader runs BMC actions and applies; every server may answer DHCP.
type Election interface {
	// Campaign blocks until this server is leader or ctx ends.
	Campaign(ctx context.Context) error
	// Resign gives leadership up (no-op when not leader).
	Resign(ctx context.Context) error
	// IsLeader reports whether this server holds leadership now.
	IsLeader() bool
	// Done is closed when leadership is lost (resigned, session expired,
	// store closed). Campaign again for a fresh Done.
	Done() <-chan struct{}
}

// PrefixEnd returns the first key after every key starting with prefix.
func PrefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00" // whole keyspace; backends treat as "no end"
}

// Bounds resolves a KeyRange to [from, to) with to=="" meaning "no end".
func (r KeyRange) Bounds() (from, to string) {
	from, to = r.Prefix, PrefixEnd(r.Prefix)
	if r.Prefix == "" {
		to = ""
	}
	if r.From > from {
		from = r.From
	}
	if r.To != "" && (to == "" || r.To < to) {
		to = r.To
	}
	return from, to
}
