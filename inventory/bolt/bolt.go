// Package bolt is the embedded inventory backend: one bbolt file, held by one
// metal process. A write returns only once the bbolt transaction holding it
// is fsync'd, so a crash at any point leaves the file as of the last
// acknowledged write. Concurrent writes share transactions (group commit):
// the engine working on many machines at once pays one fsync per batch of
// writes, not one per write.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/metal-dev/metal/internal/atomicfile"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/internal/hub"
)

var (
	bucketKV   = []byte("kv")
	bucketMeta = []byte("meta")
	keyRev     = []byte("rev")
)

// Options tunes Open. The zero value is usable.
type Options struct {
	Logger *slog.Logger
	// LockTimeout is how long Open waits for another process to let go of
	// the file (default 200ms: a second metal should fail fast, not hang).
	LockTimeout time.Duration
}

// KV is an inventory.KV over one bbolt file.
type KV struct {
	db      *bbolt.DB
	path    string
	pidPath string
	log     *slog.Logger
	wmu     sync.Mutex // orders commit and publish, so watchers see commit order
	hub     *hub.Hub[inventory.KVEvent]

	// Txns wait in queue for the committer goroutine, which takes all of
	// them at once into one bbolt transaction. wake holds at most one
	// signal: a full channel already means "look at the queue".
	qmu       sync.Mutex
	queue     []*pending
	closed    bool
	wake      chan struct{}
	committed chan struct{} // closed when the committer has returned
}

// pending is one Txn waiting for its commit, and then its outcome.
type pending struct {
	ctx  context.Context
	txn  inventory.Txn
	rev  int64
	ok   bool
	err  error
	evs  []inventory.KVEvent
	done chan struct{}
}

// maxBatch bounds the writes one bbolt transaction carries, so one commit
// (and the memory of its dirty pages) stays small whatever the queue holds.
const maxBatch = 256

// initialMmapSize is the address space the store file is mapped with
// from the start. bbolt otherwise maps the file at its size rounded up
// to a power of two and maps it again each time a commit outgrows that:
// every page read afterwards faults in anew (a rack booting into a fresh
// store remaps it as its timelines grow), and a writer waits for every
// read transaction to end first. Address space only: a page takes
// memory once read, as before. (etcd maps 10 GiB.)
const initialMmapSize = 1 << 30

// ErrLocked: another process holds the store file (a running `metal
// serve`, usually). The error wrapping it names the holder's PID.
var ErrLocked = errors.New("store in use")

// Open opens (creating if needed) the store file at path and locks it for
// this process. A second process gets an error naming the holder's PID.
func Open(path string, opts Options) (*KV, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 200 * time.Millisecond
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("state store %s: %w", path, err)
		}
	}
	pidPath := path + ".pid"
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.LockTimeout, InitialMmapSize: initialMmapSize})
	if errors.Is(err, bbolt.ErrTimeout) {
		holder := "another process"
		if b, rerr := os.ReadFile(pidPath); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = fmt.Sprintf("PID %d", pid)
			}
		}
		return nil, fmt.Errorf("state store %s is locked by %s (another metal running?): %w", path, holder, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	// The flock is the lock; the pid file only names its holder in the
	// error above. It is written after the lock is taken, so it is never
	// stale while the lock is held.
	if err := atomicfile.Write(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("state store %s: pid file: %w", path, err)
	}
	var rev int64
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketKV); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		rev = readRev(meta)
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	s := &KV{db: db, path: path, pidPath: pidPath, log: opts.Logger, hub: hub.New[inventory.KVEvent](4096, 1024, rev),
		wake: make(chan struct{}, 1), committed: make(chan struct{})}
	go s.committer()
	return s, nil
}

func readRev(meta *bbolt.Bucket) int64 {
	if b := meta.Get(keyRev); len(b) == 8 {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

func writeRev(meta *bbolt.Bucket, rev int64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(rev))
	return meta.Put(keyRev, b[:])
}

// Values are stored as 8 bytes of revision followed by the value.
func encode(rev int64, v []byte) []byte {
	b := make([]byte, 8+len(v))
	binary.BigEndian.PutUint64(b, uint64(rev))
	copy(b[8:], v)
	return b
}

func decodeKV(k, b []byte) inventory.KeyValue {
	if len(b) < 8 {
		return inventory.KeyValue{Key: string(k)}
	}
	return inventory.KeyValue{Key: string(k), ModRev: int64(binary.BigEndian.Uint64(b)), Value: bytes.Clone(b[8:])}
}

func (s *KV) Get(ctx context.Context, key string) (inventory.KeyValue, bool, error) {
	var kv inventory.KeyValue
	var found bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketKV).Get([]byte(key)); b != nil {
			kv, found = decodeKV([]byte(key), b), true
		}
		return nil
	})
	if err != nil {
		return kv, false, fmt.Errorf("state store %s: %w", s.path, err)
	}
	return kv, found, nil
}

func (s *KV) List(ctx context.Context, r inventory.KeyRange) ([]inventory.KeyValue, int64, error) {
	var out []inventory.KeyValue
	var rev int64
	err := s.db.View(func(tx *bbolt.Tx) error {
		rev = readRev(tx.Bucket(bucketMeta))
		out = scan(tx, r)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("state store %s: %w", s.path, err)
	}
	return out, rev, nil
}

func scan(tx *bbolt.Tx, r inventory.KeyRange) []inventory.KeyValue {
	from, to := r.Bounds()
	var out []inventory.KeyValue
	c := tx.Bucket(bucketKV).Cursor()
	for k, v := c.Seek([]byte(from)); k != nil; k, v = c.Next() {
		if to != "" && string(k) >= to {
			break
		}
		out = append(out, decodeKV(k, v))
		if r.Limit > 0 && len(out) == r.Limit {
			break
		}
	}
	return out
}

// Txn queues t for the committer and waits until it is on disk (or
// refused). Its conditions are checked inside the shared transaction, after
// the writes queued before it, so compare-and-swap stays exact.
// MaxTxnOps: bbolt caps no transaction; this bounds one commit's dirty
// pages, as maxBatch does.
func (s *KV) MaxTxnOps() int { return 2048 }

func (s *KV) Txn(ctx context.Context, t inventory.Txn) (int64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	p := &pending{ctx: ctx, txn: t, done: make(chan struct{})}
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return 0, false, fmt.Errorf("state store %s: %w", s.path, bbolt.ErrDatabaseNotOpen)
	}
	s.queue = append(s.queue, p)
	s.qmu.Unlock()
	s.signal()
	// No early return on ctx: a queued write may still commit, and its
	// caller must learn whether it did. A commit takes milliseconds.
	<-p.done
	return p.rev, p.ok, p.err
}

func (s *KV) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// committer commits what the queue holds, batch after batch: writers that
// arrive while one fsync runs go together in the next. The first writer
// after a quiet spell is committed at once; nothing waits for a batch to
// fill.
func (s *KV) committer() {
	defer close(s.committed)
	for range s.wake {
		for {
			s.qmu.Lock()
			n := min(len(s.queue), maxBatch)
			batch := s.queue[:n:n]
			s.queue = s.queue[n:]
			if len(s.queue) == 0 {
				s.queue = nil // let the drained requests go
			}
			closed := s.closed
			s.qmu.Unlock()
			if n == 0 {
				if closed {
					return
				}
				break
			}
			s.commitBatch(batch)
		}
	}
}

// errNoWrites rolls back a transaction in which every condition failed, so
// a failed CAS still costs no disk write.
var errNoWrites = errors.New("no writes")

// errOneFailed names the write whose error spoiled a shared transaction.
type errOneFailed struct {
	i   int
	err error
}

func (e *errOneFailed) Error() string { return e.err.Error() }

// commitBatch writes batch in one transaction, answers every caller and
// publishes the revisions in order.
func (s *KV) commitBatch(batch []*pending) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	defer func() {
		// A bug must not leave writers waiting forever.
		if p := recover(); p != nil {
			s.log.Error("state store commit panic", "panic", fmt.Sprint(p))
			for _, w := range batch {
				select {
				case <-w.done:
				default:
					w.err = fmt.Errorf("state store %s: internal error: %v", s.path, p)
					close(w.done)
				}
			}
		}
	}()
	live := batch[:0:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.err = err
			close(p.done)
			continue
		}
		live = append(live, p)
	}
	for len(live) > 0 {
		err := s.update(live)
		var one *errOneFailed
		if !errors.As(err, &one) {
			s.finish(live, err)
			return
		}
		// One bad write (a key bbolt refuses) rolled back the others: it
		// fails alone and the rest go again without it.
		s.finish(live[one.i:one.i+1], one.err)
		live = append(live[:one.i:one.i], live[one.i+1:]...)
	}
}

// update runs the batch's writes in one bbolt transaction, each at its own
// revision, and leaves each one's outcome in it. bbolt rolls the
// transaction back on any error, so a retry starts from a clean slate.
func (s *KV) update(batch []*pending) error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, meta := tx.Bucket(bucketKV), tx.Bucket(bucketMeta)
		start := readRev(meta)
		rev := start
		for i, p := range batch {
			p.rev, p.ok, p.evs = rev, false, nil
			if !condsHold(b, p.txn.If) {
				continue
			}
			rev++
			evs, err := apply(b, rev, p.txn.Then)
			if err != nil {
				return &errOneFailed{i: i, err: err}
			}
			p.rev, p.ok, p.evs = rev, true, evs
		}
		if rev == start {
			return errNoWrites
		}
		return writeRev(meta, rev)
	})
	if errors.Is(err, errNoWrites) {
		return nil
	}
	return err
}

// finish answers the batch's callers and, on success, publishes their
// changes in revision order (the caller holds wmu).
func (s *KV) finish(batch []*pending, err error) {
	for _, p := range batch {
		if err != nil {
			p.rev, p.ok, p.evs = 0, false, nil
			p.err = fmt.Errorf("state store %s: %w", s.path, err)
		} else if p.ok {
			s.hub.Publish(p.rev, p.evs)
		}
		close(p.done)
	}
}

func condsHold(b *bbolt.Bucket, conds []inventory.Cond) bool {
	for _, c := range conds {
		var have int64
		if v := b.Get([]byte(c.Key)); len(v) >= 8 {
			have = int64(binary.BigEndian.Uint64(v))
		}
		if have != c.ModRev {
			return false
		}
	}
	return true
}

func apply(b *bbolt.Bucket, rev int64, ops []inventory.Op) ([]inventory.KVEvent, error) {
	var evs []inventory.KVEvent
	for _, op := range ops {
		switch {
		case op.Delete && op.End != "":
			var keys [][]byte
			c := b.Cursor()
			for k, _ := c.Seek([]byte(op.Key)); k != nil && string(k) < op.End; k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return nil, err
				}
				evs = append(evs, inventory.KVEvent{Key: string(k), ModRev: rev, Delete: true})
			}
		case op.Delete:
			if b.Get([]byte(op.Key)) == nil {
				continue
			}
			if err := b.Delete([]byte(op.Key)); err != nil {
				return nil, err
			}
			evs = append(evs, inventory.KVEvent{Key: op.Key, ModRev: rev, Delete: true})
		default:
			if err := b.Put([]byte(op.Key), encode(rev, op.Value)); err != nil {
				return nil, err
			}
			evs = append(evs, inventory.KVEvent{Key: op.Key, ModRev: rev, Value: bytes.Clone(op.Value)})
		}
	}
	return evs, nil
}

func (s *KV) Watch(ctx context.Context, prefix string, fromRev int64) (<-chan inventory.KVEvent, error) {
	out := make(chan inventory.KVEvent, 64)
	deliver := func(it hub.Item[inventory.KVEvent]) bool {
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
				err = inventory.ErrWatchLagged
			}
			select {
			case out <- inventory.KVEvent{Err: err}:
			case <-ctx.Done():
			}
		}
		close(out)
	}
	match := func(e inventory.KVEvent) bool { return strings.HasPrefix(e.Key, prefix) }
	if err := s.hub.Subscribe(ctx, fromRev, match, deliver, end); err != nil {
		return nil, fmt.Errorf("watch from revision %d: %w", fromRev, inventory.ErrWatchLagged)
	}
	return out, nil
}

func (s *KV) Dump(ctx context.Context, fn func(inventory.KeyValue) error) (int64, error) {
	var rev int64
	err := s.db.View(func(tx *bbolt.Tx) error {
		rev = readRev(tx.Bucket(bucketMeta))
		return tx.Bucket(bucketKV).ForEach(func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fn(decodeKV(k, v))
		})
	})
	if err != nil {
		return 0, fmt.Errorf("dump state store %s: %w", s.path, err)
	}
	return rev, nil
}

// Replace swaps the whole contents in one bbolt transaction: a crash leaves
// either the old contents or the new, never a mix (the standby relies on it).
func (s *KV) Replace(ctx context.Context, kvs []inventory.KeyValue) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var rev int64
	var evs []inventory.KVEvent
	err := s.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		rev = readRev(meta) + 1
		old := tx.Bucket(bucketKV)
		if err := old.ForEach(func(k, _ []byte) error {
			evs = append(evs, inventory.KVEvent{Key: string(k), ModRev: rev, Delete: true})
			return nil
		}); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketKV); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketKV)
		if err != nil {
			return err
		}
		b.FillPercent = 0.9 // written in key order, rarely split again
		ops := make([]inventory.Op, len(kvs))
		for i, kv := range kvs {
			ops[i] = inventory.Put(kv.Key, kv.Value)
		}
		puts, err := apply(b, rev, ops)
		if err != nil {
			return err
		}
		evs = append(evs, puts...)
		return writeRev(meta, rev)
	})
	if err != nil {
		return fmt.Errorf("replace state store %s: %w", s.path, err)
	}
	s.hub.Publish(rev, evs)
	return nil
}

func (s *KV) Election(name string) (inventory.Election, error) {
	// Only one process can hold the file, so it leads.
	return inventory.NewSingleElection(), nil
}

// Close commits the writes already queued, then releases the file and its
// lock; writes after Close fail.
func (s *KV) Close() error {
	s.qmu.Lock()
	s.closed = true
	s.qmu.Unlock()
	s.signal()
	<-s.committed
	s.hub.Close(errors.New("state store closed"))
	if b, err := os.ReadFile(s.pidPath); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(s.pidPath)
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state store %s: %w", s.path, err)
	}
	return nil
}

// Path is the store file.
func (s *KV) Path() string { return s.path }
