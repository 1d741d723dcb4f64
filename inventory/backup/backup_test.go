package backup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/inventory/bolt"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newStore(t *testing.T) inventory.Store {
	t.Helper()
	kv, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := inventory.Open(context.Background(), kv, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fill adds machines (with a lease and an event each) until there are n.
func fill(t *testing.T, s inventory.Store, n int) {
	t.Helper()
	ctx := ctxT(t)
	for i := len(machines(t, s)); i < n; i++ {
		mac := fmt.Sprintf("52:54:00:00:07:%02x", i)
		if _, err := s.PutMachine(ctx, inventory.Machine{Name: fmt.Sprintf("web-%02d", i), MAC: mac, State: inventory.StateReady}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AllocateLease(ctx, inventory.AllocateRequest{MAC: mac, Start: netip.MustParseAddr("10.7.0.1"), End: netip.MustParseAddr("10.7.0.250"), TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendEvent(ctx, inventory.Event{Machine: fmt.Sprintf("web-%02d", i), Kind: inventory.EventAgent}); err != nil {
			t.Fatal(err)
		}
	}
}

func dial(t *testing.T, d *sshd) *backup.Remote {
	t.Helper()
	r, err := backup.Dial(ctxT(t), d.target(), d.opts())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func machines(t *testing.T, s inventory.Store) []inventory.Machine {
	ms, _, err := s.Machines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// clock gives each backup its own second, so names differ by time too.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func TestSnapshotFile(t *testing.T) {
	ctx := ctxT(t)
	s := newStore(t)
	fill(t, s, 3)
	var buf bytes.Buffer
	h, err := backup.Snapshot(ctx, s, &buf, "ams1", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := backup.Name(h), fmt.Sprintf("metal-ams1-20300102T030405Z-%012d.snap", h.Revision); got != want {
		t.Errorf("name %s, want %s", got, want)
	}
	if n, ok := backup.ParseName(backup.Name(h)); !ok || n.Site != "ams1" || n.Revision != h.Revision || !n.Created.Equal(h.Created) {
		t.Errorf("parse name: %+v %v", n, ok)
	}
	good := buf.Bytes()
	tests := map[string]struct {
		data    []byte
		wantErr string
	}{
		"intact":      {data: good},
		"flipped bit": {data: bytes.Replace(good, []byte("web-01"), []byte("web-0X"), 1), wantErr: "checksum mismatch"},
		"truncated":   {data: good[:len(good)/2], wantErr: "no checksum trailer"},
		"empty":       {data: nil, wantErr: "no checksum trailer"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gh, recs, err := backup.Read(bytes.NewReader(tc.data))
			if tc.wantErr != "" {
				if !errors.Is(err, backup.ErrCorrupt) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want ErrCorrupt with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(h, gh); d != "" || len(recs) != h.Records {
				t.Errorf("header (-want +got):\n%s\n%d records", d, len(recs))
			}
		})
	}
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	src := newStore(t)
	fill(t, src, 20)
	r := dial(t, d)
	res, err := backup.Backup(ctx, src, r, backup.Options{Site: "ams1", Keep: 3})
	if err != nil {
		t.Fatal(err)
	}
	dst := newStore(t)
	h, err := backup.Restore(ctx, r, "ams1", "", dst, backup.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Revision != res.Header.Revision {
		t.Errorf("restored revision %d, backed up %d", h.Revision, res.Header.Revision)
	}
	if d := cmp.Diff(machines(t, src), machines(t, dst), cmpopts.IgnoreFields(inventory.Machine{}, "Revision"), cmpopts.EquateComparable(netip.Addr{})); d != "" {
		t.Errorf("machines (-src +dst):\n%s", d)
	}
	if _, err := backup.Restore(ctx, r, "ams1", "", dst, backup.RestoreOptions{}); !errors.Is(err, inventory.ErrNotEmpty) {
		t.Errorf("restore into a used store: got %v, want ErrNotEmpty", err)
	}
	if _, err := backup.Restore(ctx, r, "other-site", "", newStore(t), backup.RestoreOptions{}); !errors.Is(err, backup.ErrNoSnapshot) {
		t.Errorf("restore of another site: got %v, want ErrNoSnapshot", err)
	}
}

func TestHostKeyChecking(t *testing.T) {
	d := startSSHD(t)
	tests := map[string]struct {
		knownHosts func()
		wantErr    error
		wantMsg    string
	}{
		"changed key": {
			knownHosts: func() { d.trust(writeKey(t, filepath.Join(t.TempDir(), "other"))) },
			wantErr:    backup.ErrHostKeyChanged, wantMsg: "has CHANGED",
		},
		"unknown host": {
			knownHosts: func() { d.trust(nil) },
			wantErr:    backup.ErrUnknownHostKey, wantMsg: "ssh-keyscan -p",
		},
		"known key": {knownHosts: func() { d.trust(d.hostPub) }},
	}
	for _, name := range []string{"changed key", "unknown host", "known key"} {
		tc := tests[name]
		t.Run(name, func(t *testing.T) {
			tc.knownHosts()
			r, err := backup.Dial(ctxT(t), d.target(), d.opts())
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				r.Close()
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("got %v, want %v with %q", err, tc.wantErr, tc.wantMsg)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestRetention(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	s := newStore(t)
	r := dial(t, d)
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	var names []string
	for i := range 5 {
		fill(t, s, i+1) // the store changes between backups
		res, err := backup.Backup(ctx, s, r, backup.Options{Site: "ams1", Keep: 3, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, res.Name)
		if i == 3 && (len(res.Deleted) != 1 || res.Deleted[0] != names[0]) {
			t.Errorf("4th backup deleted %v, want [%s]", res.Deleted, names[0])
		}
	}
	// Another site's snapshots in the same directory are not touched.
	other := newStore(t)
	if _, err := backup.Backup(ctx, other, r, backup.Options{Site: "fra1", Keep: 1, Now: clk.Now}); err != nil {
		t.Fatal(err)
	}
	snaps, err := backup.Snapshots(ctx, r, "ams1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range snaps {
		got = append(got, s.Name)
	}
	if d := cmp.Diff(names[2:], got); d != "" {
		t.Errorf("kept (-want +got):\n%s", d)
	}
}

// stallReader hands out n bytes, then signals and blocks until released,
// then hands out the rest: the upload fails only because the server died.
type stallReader struct {
	r       io.Reader
	n       int
	stalled chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.n == 0 {
		s.once.Do(func() { close(s.stalled) })
		<-s.release
		s.n = -1
	}
	if s.n > 0 && len(p) > s.n {
		p = p[:s.n]
	}
	k, err := s.r.Read(p)
	s.n -= k
	return k, err
}

// TestServerKilledMidUpload kills sshd (with its session process) while a
// snapshot is half uploaded: the previous snapshot stays intact and newest.
func TestServerKilledMidUpload(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	s := newStore(t)
	fill(t, s, 5)
	r := dial(t, d)
	first, err := backup.Backup(ctx, s, r, backup.Options{Site: "ams1", Keep: 3})
	if err != nil {
		t.Fatal(err)
	}

	// A second, bigger snapshot (several sftp write chunks), uploaded under
	// its real name but stalled three quarters of the way.
	fill(t, s, 150)
	var buf bytes.Buffer
	h, err := backup.Snapshot(ctx, s, &buf, "ams1", time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	sr := &stallReader{r: bytes.NewReader(buf.Bytes()), n: buf.Len() * 3 / 4, stalled: make(chan struct{}), release: make(chan struct{})}
	upErr := make(chan error, 1)
	go func() { upErr <- r.Put(ctx, backup.Name(h), sr) }()
	select {
	case <-sr.stalled:
	case <-time.After(20 * time.Second):
		t.Fatal("upload never reached half-way")
	}
	time.Sleep(100 * time.Millisecond) // let the written half reach the server
	d.Kill()
	close(sr.release)
	if err := <-upErr; err == nil {
		t.Fatal("upload to a killed server succeeded")
	} else {
		t.Logf("upload failed as expected: %v", err)
	}

	d.Restart() // the server comes back (same port, keys, directory)
	r2 := dial(t, d)
	latest, err := backup.Latest(ctx, r2, "ams1")
	if err != nil {
		t.Fatal(err)
	}
	if latest.Name != first.Name {
		t.Fatalf("newest snapshot is %s, want the previous %s", latest.Name, first.Name)
	}
	if _, _, err := backup.Fetch(ctx, r2, latest.Name); err != nil {
		t.Fatalf("previous snapshot damaged: %v", err)
	}
	files, _ := r2.Files(ctx)
	partial := false
	for _, f := range files {
		if f.Name == backup.Name(h) {
			t.Errorf("partial upload visible as %s", f.Name)
		}
		if strings.Contains(f.Name, ".tmp-") && f.Size > 0 {
			partial = true // the half that reached the server, under its temporary name
		}
	}
	if !partial {
		t.Errorf("no partial temporary file: the server was not killed mid-upload? files: %+v", files)
	}
}

// TestStandbyPromote: the primary backs up and beats; a standby replicates;
// promote is refused while the primary is fresh, allowed once it is stale,
// and fences the primary afterwards.
func TestStandbyPromote(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	primaryStore := newStore(t)
	fill(t, primaryStore, 4)
	r := dial(t, d)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(dt time.Duration) { mu.Lock(); now = now.Add(dt); mu.Unlock() }

	primary := &backup.Primary{Remote: r, Site: "ams1", Owner: "ams1-a", Interval: time.Minute, Now: clock}
	if err := primary.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Backup(ctx, primaryStore, r, backup.Options{Site: "ams1", Keep: 5, Now: clock}); err != nil {
		t.Fatal(err)
	}

	replica := newStore(t)
	fill(t, replica, 1) // stale local data is replaced
	rep := &backup.Replicator{Remote: dial(t, d), Site: "ams1", Replica: replica, Interval: time.Minute}
	name, changed, err := rep.Sync(ctx)
	if err != nil || !changed {
		t.Fatalf("sync: %s %v %v", name, changed, err)
	}
	if _, changed, _ := rep.Sync(ctx); changed {
		t.Error("second sync with no new snapshot changed the replica")
	}
	if d := cmp.Diff(machines(t, primaryStore), machines(t, replica), cmpopts.IgnoreFields(inventory.Machine{}, "Revision"), cmpopts.EquateComparable(netip.Addr{})); d != "" {
		t.Errorf("replica (-primary +replica):\n%s", d)
	}

	// A new backup reaches the replica on the next sync.
	advance(time.Second)
	fill(t, primaryStore, 6)
	if _, err := backup.Backup(ctx, primaryStore, r, backup.Options{Site: "ams1", Keep: 5, Now: clock}); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := rep.Sync(ctx); err != nil || !changed {
		t.Fatalf("sync after new backup: %v %v", changed, err)
	}
	if got := len(machines(t, replica)); got != 6 {
		t.Errorf("replica has %d machines, want 6", got)
	}

	standby := backup.PromoteOptions{Site: "ams1", Owner: "ams1-b", Now: clock}
	advance(2 * time.Minute)
	if _, err := backup.Promote(ctx, r, standby); !errors.Is(err, backup.ErrPrimaryAlive) {
		t.Fatalf("promote with a fresh primary: got %v, want ErrPrimaryAlive", err)
	}
	forced := standby
	forced.Force = true
	forced.Owner = "ams1-c"
	if _, err := backup.Promote(ctx, r, forced); err != nil {
		t.Fatalf("forced promote: %v", err)
	}
	advance(5 * time.Minute)
	if p, err := backup.Promote(ctx, r, standby); err != nil || p.Heartbeat.Site != "ams1" || p.Fence.Epoch != 2 {
		t.Fatalf("promote after primary went stale: %+v, %v", p, err)
	}
	// The old primary, back, is fenced; the promoted one beats fine.
	if err := primary.Beat(ctx); !errors.Is(err, backup.ErrFenced) {
		t.Errorf("old primary beat: got %v, want ErrFenced", err)
	}
	promoted := &backup.Primary{Remote: r, Site: "ams1", Owner: "ams1-b", Interval: time.Minute, Now: clock}
	if err := promoted.Beat(ctx); err != nil {
		t.Errorf("promoted primary beat: %v", err)
	}
}

func TestSplitURL(t *testing.T) {
	tests := map[string]struct{ dir, name string }{
		"sftp://u@h/ams1/latest":  {"sftp://u@h/ams1", ""},
		"sftp://u@h/ams1/latest/": {"sftp://u@h/ams1", ""},
		"sftp://u@h/ams1":         {"sftp://u@h/ams1", ""},
		"sftp://u@h//srv/ams1/metal-ams1-20300102T030405Z-000000000042.snap": {"sftp://u@h//srv/ams1", "metal-ams1-20300102T030405Z-000000000042.snap"},
	}
	for raw, want := range tests {
		dir, name := backup.SplitURL(raw)
		if dir != want.dir || name != want.name {
			t.Errorf("SplitURL(%q) = %q, %q; want %q, %q", raw, dir, name, want.dir, want.name)
		}
	}
}

func TestParseTarget(t *testing.T) {
	tests := map[string]struct {
		raw     string
		want    backup.Target
		wantErr bool
	}{
		"port":     {raw: "sftp://backup@store.example:2222/metal/ams1", want: backup.Target{User: "backup", Host: "store.example", Port: 2222, Dir: "metal/ams1"}},
		"default":  {raw: "sftp://backup@store.example/metal", want: backup.Target{User: "backup", Host: "store.example", Port: 22, Dir: "metal"}},
		"absolute": {raw: "sftp://b@h//srv/metal", want: backup.Target{User: "b", Host: "h", Port: 22, Dir: "/srv/metal"}},
		"no path":  {raw: "sftp://b@h", want: backup.Target{User: "b", Host: "h", Port: 22, Dir: "."}},
		"scheme":   {raw: "scp://b@h/x", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := backup.ParseTarget(tc.raw)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			if d := cmp.Diff(tc.want, got); !tc.wantErr && d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// A backup of a store still at the revision of the last snapshot writes
// nothing; one change, and the next backup writes again.
func TestBackupOnlyWhenChanged(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	r := dial(t, d)
	s := newStore(t)
	fill(t, s, 2)
	first, err := backup.Backup(ctx, s, r, backup.Options{Site: "ams1"})
	if err != nil || first.Unchanged {
		t.Fatalf("first backup: %+v %v", first, err)
	}
	again, err := backup.Backup(ctx, s, r, backup.Options{Site: "ams1", Unless: first.Header.Revision, Now: func() time.Time { return time.Now().Add(time.Minute) }})
	if err != nil || !again.Unchanged || again.Name != "" {
		t.Fatalf("backup of an unchanged store: %+v %v, want Unchanged", again, err)
	}
	fill(t, s, 3)
	changed, err := backup.Backup(ctx, s, r, backup.Options{Site: "ams1", Unless: first.Header.Revision, Now: func() time.Time { return time.Now().Add(2 * time.Minute) }})
	if err != nil || changed.Unchanged || changed.Header.Revision <= first.Header.Revision {
		t.Fatalf("backup after a change: %+v %v", changed, err)
	}
	snaps, err := backup.Snapshots(ctx, r, "ams1")
	if err != nil || len(snaps) != 2 {
		t.Errorf("snapshots %v (%v), want 2", snaps, err)
	}
}
