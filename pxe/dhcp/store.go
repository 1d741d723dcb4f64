package dhcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Lease is one binding the server keeps across restarts: an address leased
// to a MAC (possibly expired: a MAC keeps getting its old address while no
// one else took it), or an address a MAC declined as in use.
type Lease struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string
	Expiry   time.Time
	// Declined: the MAC reported IP in use by someone else; the address
	// stays out of the pool until Expiry.
	Declined bool
	// Relay, CircuitID and RemoteID say where a relayed lease was asked
	// from: the relay (giaddr) and its option 82 sub-options, the switch
	// port. Empty for a client on the server's own link.
	Relay               netip.Addr
	CircuitID, RemoteID string
}

// LeaseStore keeps the lease table across restarts. Save gets the whole
// table each time (it is bounded by the pools and the declared machines),
// and must make it durable before returning: the server acknowledges a
// lease only after Save has returned. Save must not keep the slice, which
// the next Save reuses.
type LeaseStore interface {
	Load(ctx context.Context) ([]Lease, error)
	Save(ctx context.Context, leases []Lease) error
}

// FileStore is a LeaseStore in two files: a JSON snapshot of the table at
// path, and a journal beside it (path + ".journal-N", one JSON record a
// line) of what changed since. A Save appends the changes since the last
// one to the journal and waits for fdatasync: one write and one flush per
// group commit, where rewriting the whole table (temp file, fsync,
// rename, fsync of the directory) cost several times the CPU and two
// flushes. Once the journal outgrows the snapshot, a Save writes a new
// snapshot atomically (temp file, fsync, rename, fsync of the directory)
// that names a new, empty journal, and removes the old one.
//
// The snapshot names its journal, so a crash at any point leaves a
// snapshot, old or new, and the journal that goes with it: the old one
// with every record written since, or the new one. Each record says the
// whole state of one address; replayed in order onto the snapshot they
// give the table of the last Save that returned. A record torn by the
// crash (the journal's last line) was never acknowledged and is dropped.
type FileStore struct {
	path string

	mu sync.Mutex
	// saved is what the files hold, by address; nil until read.
	saved map[netip.Addr]*savedLease
	// saves counts the Saves that compared leases with saved (marks);
	// changed is scratch for one of them.
	saves   uint64
	changed []int
	// journalBytes is the journal's length; snapshotBytes the snapshot's.
	journalBytes, snapshotBytes int64
	// seq numbers the journal the snapshot names; created: that journal's
	// directory entry is durable.
	seq     uint64
	created bool
	// compact: the next Save writes a snapshot instead of appending (no
	// snapshot yet, the journal's tail is in doubt after a failed append,
	// or the journal has grown past the snapshot).
	compact bool
	// minJournal is minJournalBytes but in tests.
	minJournal int64
	buf        bytes.Buffer
}

// NewFileStore returns a store in the file at path; the file need not
// exist yet, its directory must.
func NewFileStore(path string) *FileStore {
	return &FileStore{path: path, minJournal: minJournalBytes}
}

// savedLease is a lease the files hold, and the last Save whose leases
// held its address: a Save finds the addresses it no longer holds without
// a set of its own, and updates a changed lease in place.
type savedLease struct {
	Lease
	mark uint64
}

func (f *FileStore) journal(seq uint64) string { return fmt.Sprintf("%s.journal-%d", f.path, seq) }

// fileFormat is the on-disk form; MACs as text so the file can be read.
type fileFormat struct {
	Version int `json:"version"`
	// Journal is the number of the journal whose records follow the
	// snapshot (0 in files written before there were journals).
	Journal uint64      `json:"journal,omitempty"`
	Leases  []fileLease `json:"leases"`
}

type fileLease struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Hostname string    `json:"hostname,omitempty"`
	Expiry   time.Time `json:"expiry"`
	Declined bool      `json:"declined,omitempty"`
	Relay    string    `json:"relay,omitempty"`
	Circuit  string    `json:"circuit_id,omitempty"`
	Remote   string    `json:"remote_id,omitempty"`
}

// journalRecord is one line of the journal: the state of one address from
// then on, or that it holds nothing (Removed).
type journalRecord struct {
	fileLease
	Removed bool `json:"removed,omitempty"`
}

const (
	fileVersion = 1
	// The journal is folded into a new snapshot once it is both this long
	// and journalPerSnapshot times the snapshot's size: under a steady
	// load of renewals that is every few seconds, a small part of the
	// flushes, and a restart replays at most this much.
	minJournalBytes    = 1 << 20
	journalPerSnapshot = 8
)

// Load reads the leases; missing files are an empty table.
func (f *FileStore) Load(ctx context.Context) ([]Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read(); err != nil {
		return nil, err
	}
	out := make([]Lease, 0, len(f.saved))
	for _, l := range f.saved {
		out = append(out, l.Lease)
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out, nil
}

// read fills f.saved from the snapshot and the journal.
func (f *FileStore) read() error {
	saved := map[netip.Addr]*savedLease{}
	b, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.seq = 0
		f.compact = true // the first Save writes the snapshot
	case err != nil:
		return fmt.Errorf("read leases: %w", err)
	default:
		var ff fileFormat
		if err := json.Unmarshal(b, &ff); err != nil {
			return fmt.Errorf("parse leases %s: %w", f.path, err)
		}
		if ff.Version != fileVersion {
			return fmt.Errorf("leases %s: version %d, want %d", f.path, ff.Version, fileVersion)
		}
		f.seq = ff.Journal
		// A crash between a new snapshot and the removal of the journal
		// before it leaves that one behind: it is not read.
		for i, fl := range ff.Leases {
			l, err := fl.lease()
			if err != nil {
				return fmt.Errorf("leases %s: entry %d: %w", f.path, i, err)
			}
			saved[l.IP] = &savedLease{Lease: l}
		}
	}
	f.snapshotBytes = int64(len(b))
	n, torn, err := f.replay(saved)
	if err != nil {
		return err
	}
	f.saved, f.journalBytes = saved, n
	if torn {
		// Appending after a torn record would bury it mid-journal.
		f.compact = true
	}
	return nil
}

// replay applies the journal's records to saved. It returns the length of
// the journal and whether its last line is torn (cut by a crash mid-write:
// never acknowledged, so dropped).
func (f *FileStore) replay(saved map[netip.Addr]*savedLease) (int64, bool, error) {
	j, err := os.Open(f.journal(f.seq))
	if errors.Is(err, fs.ErrNotExist) {
		f.created = false
		return 0, false, nil
	}
	f.created = true
	if err != nil {
		return 0, false, fmt.Errorf("read lease journal: %w", err)
	}
	defer j.Close()
	r := bufio.NewReader(j)
	var n int64
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		n += int64(len(b))
		if errors.Is(err, io.EOF) {
			return n, len(b) > 0, nil // no newline: torn
		}
		if err != nil {
			return 0, false, fmt.Errorf("read lease journal: %w", err)
		}
		var rec journalRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			if _, err := r.Peek(1); errors.Is(err, io.EOF) {
				return n, true, nil // the last line: torn
			}
			return 0, false, fmt.Errorf("lease journal %s: line %d: %w", j.Name(), line, err)
		}
		ip, err := netip.ParseAddr(rec.IP)
		if err != nil {
			return 0, false, fmt.Errorf("lease journal %s: line %d: %w", j.Name(), line, err)
		}
		if rec.Removed {
			delete(saved, ip)
			continue
		}
		l, err := rec.lease()
		if err != nil {
			return 0, false, fmt.Errorf("lease journal %s: line %d: %w", j.Name(), line, err)
		}
		saved[ip] = &savedLease{Lease: l}
	}
}

func (fl fileLease) lease() (Lease, error) {
	mac, err := net.ParseMAC(fl.MAC)
	if err != nil {
		return Lease{}, err
	}
	ip, err := netip.ParseAddr(fl.IP)
	if err != nil {
		return Lease{}, err
	}
	l := Lease{MAC: mac, IP: ip, Hostname: fl.Hostname, Expiry: fl.Expiry, Declined: fl.Declined, CircuitID: fl.Circuit, RemoteID: fl.Remote}
	if fl.Relay != "" {
		if l.Relay, err = netip.ParseAddr(fl.Relay); err != nil {
			return Lease{}, err
		}
	}
	return l, nil
}

func fileLeaseOf(l Lease) fileLease {
	fl := fileLease{MAC: l.MAC.String(), IP: l.IP.String(), Hostname: l.Hostname, Expiry: l.Expiry.UTC(), Declined: l.Declined,
		Circuit: l.CircuitID, Remote: l.RemoteID}
	if l.Relay.IsValid() {
		fl.Relay = l.Relay.String()
	}
	return fl
}

func sameLease(a, b Lease) bool {
	return a.IP == b.IP && bytes.Equal(a.MAC, b.MAC) && a.Hostname == b.Hostname && a.Expiry.Equal(b.Expiry) && a.Declined == b.Declined &&
		a.Relay == b.Relay && a.CircuitID == b.CircuitID && a.RemoteID == b.RemoteID
}

// Save makes leases the stored table: it appends what differs from the
// last Save to the journal, or writes a new snapshot.
func (f *FileStore) Save(ctx context.Context, leases []Lease) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.saved == nil {
		if err := f.read(); err != nil {
			return fmt.Errorf("save leases: %w", err)
		}
	}
	if !f.compact && f.journalBytes > max(f.minJournal, journalPerSnapshot*f.snapshotBytes) {
		f.compact = true
	}
	if f.compact {
		return f.writeSnapshot(leases)
	}
	f.buf.Reset()
	enc := json.NewEncoder(&f.buf)
	// Each saved address leases holds is marked with this Save; those
	// left unmarked are gone. Under load a Save changes a few leases of
	// many: the rest cost a lookup each, no set and no map rebuilt.
	f.saves++
	mark, held := f.saves, 0
	f.changed = f.changed[:0]
	for i, l := range leases {
		if old := f.saved[l.IP]; old != nil {
			if old.mark != mark {
				old.mark = mark
				held++
			}
			if sameLease(old.Lease, l) {
				continue
			}
		}
		f.changed = append(f.changed, i)
		if err := enc.Encode(journalRecord{fileLease: fileLeaseOf(l)}); err != nil {
			return fmt.Errorf("encode leases: %w", err)
		}
	}
	var removed []netip.Addr
	if held < len(f.saved) {
		for ip, old := range f.saved {
			if old.mark != mark {
				removed = append(removed, ip)
				if err := enc.Encode(journalRecord{fileLease: fileLease{IP: ip.String()}, Removed: true}); err != nil {
					return fmt.Errorf("encode leases: %w", err)
				}
			}
		}
	}
	if f.buf.Len() == 0 {
		return nil // nothing changed: nothing to wait for
	}
	if err := f.append(f.buf.Bytes()); err != nil {
		// Part of the records may be in the journal: append no more after
		// them; the next Save writes the whole table afresh.
		f.compact = true
		return fmt.Errorf("save leases: %w", err)
	}
	f.journalBytes += int64(f.buf.Len())
	// What the files hold now: the journal's records, in their order.
	for _, i := range f.changed {
		l := leases[i]
		if old := f.saved[l.IP]; old != nil {
			old.Lease = l
		} else {
			f.saved[l.IP] = &savedLease{Lease: l, mark: mark}
		}
	}
	for _, ip := range removed {
		delete(f.saved, ip)
	}
	return nil
}

// remember records leases as what the files hold.
func (f *FileStore) remember(leases []Lease) {
	clear(f.saved)
	for _, l := range leases {
		f.saved[l.IP] = &savedLease{Lease: l}
	}
}

// append writes b at the journal's end and waits until it is on disk. The
// journal is opened for each append, so a file system that turned
// read-only refuses it at once.
func (f *FileStore) append(b []byte) error {
	j, err := os.OpenFile(f.journal(f.seq), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := j.Write(b); err != nil {
		j.Close()
		return err
	}
	// fdatasync: the records and the journal's new length, not its times.
	if err := unix.Fdatasync(int(j.Fd())); err != nil {
		j.Close()
		return fmt.Errorf("sync %s: %w", j.Name(), err)
	}
	if err := j.Close(); err != nil {
		return err
	}
	if !f.created {
		// A new journal's name must be durable too.
		if err := syncDir(filepath.Dir(f.path)); err != nil {
			return err
		}
		f.created = true
	}
	return nil
}

// writeSnapshot replaces the snapshot with leases (temp file, fsync,
// rename, fsync of the directory), naming a new journal, then removes the
// old journal: every record in it is in the snapshot now.
func (f *FileStore) writeSnapshot(leases []Lease) error {
	// In address order, for the people who read it.
	sorted := slices.SortedFunc(slices.Values(leases), func(a, b Lease) int { return a.IP.Compare(b.IP) })
	ff := fileFormat{Version: fileVersion, Journal: f.seq + 1, Leases: make([]fileLease, len(sorted))}
	for i, l := range sorted {
		ff.Leases[i] = fileLeaseOf(l)
	}
	b, err := json.MarshalIndent(ff, "", " ")
	if err != nil {
		return fmt.Errorf("encode leases: %w", err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".*")
	if err != nil {
		return fmt.Errorf("save leases: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save leases: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save leases: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save leases: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("save leases: %w", err)
	}
	// The rename is durable only once the directory is.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("save leases: %w", err)
	}
	old := f.journal(f.seq)
	f.seq++
	f.snapshotBytes, f.journalBytes, f.created, f.compact = int64(len(b)), 0, false, false
	f.remember(leases)
	// The new snapshot no longer reads it: left behind, it is only litter.
	if err := os.Remove(old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("save leases: remove the old journal: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// SharedLeaseStore is a LeaseStore that several servers allocate from at
// once (metal servers sharing one etcd). A table over it decides nothing
// alone: it asks the store for every pool address before offering it and
// for every address before acknowledging it, and the store's transaction
// decides, so no address is ever held by two MACs whichever server answered
// them. Save has nothing left to write then (each call below is durable
// when it returns); Load fills the table at start.
type SharedLeaseStore interface {
	LeaseStore
	// Allocate gives a.MAC an address of [a.Start, a.End] until now+a.TTL:
	// the one it holds there, else a.Prefer if free, else a free or
	// expired one. ErrPoolExhausted: none is left (or, for a one-address
	// range, that address is another MAC's).
	Allocate(ctx context.Context, a Allocation) (netip.Addr, time.Time, error)
	// Release ends mac's lease of ip; a lease of another address, or none,
	// is left alone.
	Release(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) error
	// Decline takes ip from mac and keeps it from every server's pool
	// until until; an address mac does not hold is left alone.
	Decline(ctx context.Context, mac net.HardwareAddr, ip netip.Addr, until time.Time) error
}

// Allocation asks a SharedLeaseStore for an address.
type Allocation struct {
	MAC        net.HardwareAddr
	Hostname   string
	Start, End netip.Addr
	// Exclude are addresses of the range never given (the server's own,
	// the gateway's).
	Exclude []netip.Addr
	Prefer  netip.Addr
	TTL     time.Duration
}

// ErrLeaseStore marks a failure to reach the shared store: the request goes
// unanswered (the client retries) rather than NAKed.
var ErrLeaseStore = errors.New("lease store")
