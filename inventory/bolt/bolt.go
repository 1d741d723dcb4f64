// Package bolt is the embedded inventory backend: one bbolt file, held by one
// metal process. Every write is one fsync'd bbolt transaction, so a crash at
// any point leaves the file as of the last acknowledged write.
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
}

// ErrLocked: another process holds the store file (a running `metal
// serve`, usually). The error wrapping it names the holder's PID.
var ErrLocked = errors.New("store in use")

// errCondFailed rolls back a Txn whose conditions did not hold, so a failed
// CAS costs no disk write.
var errCondFailed = errors.New("condition failed")

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
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.LockTimeout})
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
	if err := writeFileAtomic(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
		db.Close()
		return nil, fmt.Errorf("state store %s: write pid file: %w", path, err)
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
	return &KV{db: db, path: path, pidPath: pidPath, log: opts.Logger, hub: hub.New[inventory.KVEvent](4096, 1024, rev)}, nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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

func (s *KV) Txn(ctx context.Context, t inventory.Txn) (int64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var rev int64
	var evs []inventory.KVEvent
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, meta := tx.Bucket(bucketKV), tx.Bucket(bucketMeta)
		rev = readRev(meta)
		for _, c := range t.If {
			var have int64
			if v := b.Get([]byte(c.Key)); v != nil {
				have = decodeKV(nil, v).ModRev
			}
			if have != c.ModRev {
				return errCondFailed
			}
		}
		rev++
		var err error
		if evs, err = apply(b, rev, t.Then); err != nil {
			return err
		}
		return writeRev(meta, rev)
	})
	if errors.Is(err, errCondFailed) {
		return rev, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("state store %s: %w", s.path, err)
	}
	s.hub.Publish(rev, evs)
	return rev, true, nil
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

// Close releases the file and its lock.
func (s *KV) Close() error {
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
