package backup_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
)

// keyed is one host's view of the backup directory: a Remote holding key
// (nil: none) and the log it writes refusals to.
type keyed struct {
	r   *backup.Remote
	log *syncbuf.Buffer
}

func dialKeyed(t *testing.T, d *sshd, key *backup.Key) keyed {
	t.Helper()
	var log syncbuf.Buffer
	opts := d.opts()
	opts.Logger = slog.New(slog.NewTextHandler(&log, nil))
	r, err := backup.Dial(ctxT(t), d.target(), opts)
	if err != nil {
		t.Fatal(err)
	}
	r.Key = key
	t.Cleanup(func() { r.Close() })
	return keyed{r: r, log: &log}
}

func newKey(t *testing.T) *backup.Key {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.key")
	if _, err := backup.WriteKeyFile(path); err != nil {
		t.Fatal(err)
	}
	k, err := backup.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backup.key")
	k, err := backup.WriteKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.WriteKeyFile(path); err == nil {
		t.Error("a second keygen over the key file succeeded; it must never replace a key in use")
	}
	got, err := backup.LoadKey(path)
	if err != nil || got.ID() != k.ID() {
		t.Fatalf("load: %v, id %v want %s", err, got, k.ID())
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.LoadKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable key: %v, want a refusal saying chmod 600", err)
	}
	if _, err := backup.ParseKey([]byte("hmac-sha256 c2hvcnQ=\n")); err == nil {
		t.Error("a short key without its age line was accepted")
	}
}

// evilStore holds what a forger would plant: a machine whose boot intent
// points at their kernel.
func evilStore(t *testing.T) inventory.Store {
	s := newStore(t)
	if _, err := s.PutMachine(ctxT(t), inventory.Machine{Name: "web-00", MAC: "52:54:00:00:07:00", State: inventory.StateReady,
		Intent: inventory.BootIntent{Kernel: "http://evil.example/vmlinuz"}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// plant writes name into the backup directory as whoever controls the
// SFTP server can.
func plant(t *testing.T, d *sshd, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(d.target().Dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, d *sshd, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.target().Dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// snapshotAt is a snapshot of s taken at at: a valid checksum, unsigned.
func snapshotAt(t *testing.T, s inventory.Store, at time.Time) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	h, err := backup.Snapshot(ctxT(t), s, &buf, "ams1", at)
	if err != nil {
		t.Fatal(err)
	}
	return backup.Name(h), buf.Bytes()
}

// Forged snapshots (a valid checksum, and no signature, another key's, or
// a genuine signature line over other content) are refused by restore and
// by the standby, and logged; both take the newest genuine snapshot
// instead.
func TestForgedSnapshotRefused(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	key := newKey(t)
	primary := dialKeyed(t, d, key)
	src := newStore(t)
	fill(t, src, 3)
	genuine, err := backup.Backup(ctx, src, primary.r, backup.Options{Site: "ams1", Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	sigLine := func(b []byte) []byte {
		lines := bytes.SplitAfter(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
		return append(lines[len(lines)-1], '\n')
	}
	evil := evilStore(t)
	// Each forgery is the newest snapshot when it is tried.
	forgeries := map[string]func(at time.Time){
		"unsigned": func(at time.Time) {
			name, snap := snapshotAt(t, evil, at)
			plant(t, d, name, snap)
		},
		"genuine signature over other content": func(at time.Time) {
			name, snap := snapshotAt(t, evil, at)
			plant(t, d, name, append(snap, sigLine(read(t, d, genuine.Name))...))
		},
		"another key": func(at time.Time) {
			other := dialKeyed(t, d, newKey(t))
			if _, err := backup.Backup(ctx, evil, other.r, backup.Options{Site: "ams1", Now: func() time.Time { return at }}); err != nil {
				t.Fatal(err)
			}
		},
	}
	i := 0
	for what, forge := range forgeries {
		t.Run(what, func(t *testing.T) {
			i++
			forge(time.Now().Add(time.Duration(i) * time.Hour))
			standby := dialKeyed(t, d, key)
			if _, _, err := backup.Fetch(ctx, standby.r, mustLatest(t, standby.r)); !errors.Is(err, backup.ErrForged) {
				t.Fatalf("fetch of the forged snapshot: %v, want ErrForged", err)
			}
			t.Logf("refused: %s", standby.log.String())
			h, err := backup.Restore(ctx, standby.r, "ams1", "", newStore(t), backup.RestoreOptions{})
			if err != nil || h.Revision != genuine.Header.Revision {
				t.Errorf("restore of latest: revision %d, %v; want the genuine snapshot (revision %d)", h.Revision, err, genuine.Header.Revision)
			}
			replica := newStore(t)
			rep := &backup.Replicator{Remote: standby.r, Site: "ams1", Replica: replica, Interval: time.Minute}
			if got, _, err := rep.Sync(ctx); err != nil || got != genuine.Name {
				t.Errorf("standby sync: %s, %v; want %s", got, err, genuine.Name)
			}
			if m, err := replica.Machine(ctx, "web-00"); err != nil || strings.Contains(m.Intent.Kernel, "evil") {
				t.Errorf("the replica holds the forger's machine: %+v %v", m, err)
			}
			if !strings.Contains(standby.log.String(), "refused a file of the backup directory") {
				t.Errorf("the refusal was not logged:\n%s", standby.log.String())
			}
		})
	}
}

func mustLatest(t *testing.T, r *backup.Remote) string {
	t.Helper()
	n, err := backup.Latest(ctxT(t), r, "ams1")
	if err != nil {
		t.Fatal(err)
	}
	return n.Name
}

// A forged heartbeat (fresh, well-formed, wrong signature) neither holds
// off nor permits a promote: promote refuses it as forged, logs it, and
// says what to do.
func TestForgedHeartbeatRefused(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	key := newKey(t)
	primary := dialKeyed(t, d, key)
	p := &backup.Primary{Remote: primary.r, Site: "ams1", Owner: "ams1-a", Interval: time.Second}
	if err := p.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	// The genuine heartbeat with a newer time: the signature line is kept.
	genuine := read(t, d, "metal-ams1.heartbeat")
	var hb backup.Heartbeat
	body, sig, _ := bytes.Cut(genuine, []byte("\nmetal-sig"))
	if err := json.Unmarshal(body, &hb); err != nil {
		t.Fatal(err)
	}
	hb.Time = time.Now().Add(time.Hour)
	forged, _ := json.Marshal(hb)
	plant(t, d, "metal-ams1.heartbeat", append(append(forged, "\nmetal-sig"...), sig...))

	standby := dialKeyed(t, d, key)
	_, err := backup.Promote(ctx, standby.r, backup.PromoteOptions{Site: "ams1", Owner: "ams1-b", Margin: time.Second})
	if !errors.Is(err, backup.ErrForged) || errors.Is(err, backup.ErrPrimaryAlive) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("promote over a forged heartbeat: %v, want ErrForged saying what to do", err)
	}
	if !strings.Contains(standby.log.String(), "metal-ams1.heartbeat") {
		t.Errorf("the refusal was not logged:\n%s", standby.log.String())
	}
	t.Log(err)
	// Unsigned: the same.
	plant(t, d, "metal-ams1.heartbeat", append(forged, '\n'))
	if _, err := backup.Promote(ctx, standby.r, backup.PromoteOptions{Site: "ams1", Owner: "ams1-b"}); !errors.Is(err, backup.ErrForged) {
		t.Errorf("promote over an unsigned heartbeat: %v, want ErrForged", err)
	}
	// The primary's next beat replaces it; promote then sees it alive.
	if err := p.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Promote(ctx, standby.r, backup.PromoteOptions{Site: "ams1", Owner: "ams1-b"}); !errors.Is(err, backup.ErrPrimaryAlive) {
		t.Errorf("promote beside the genuine heartbeat: %v, want ErrPrimaryAlive", err)
	}
}

// A forged fence (the next epoch, naming another owner, wrong signature)
// does not stop the primary, and is logged; a promote claims the epoch
// above it, and that genuine fence does stop the primary.
func TestForgedFenceRefused(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	key := newKey(t)
	primary := dialKeyed(t, d, key)
	p := &backup.Primary{Remote: primary.r, Site: "ams1", Owner: "ams1-a", Interval: time.Second, Now: func() time.Time { return time.Now().Add(-time.Hour) }}
	if err := p.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	// A genuine fence's signature line, over a fence of the forger's.
	other := dialKeyed(t, d, newKey(t))
	if _, err := backup.Promote(ctx, other.r, backup.PromoteOptions{Site: "ams1", Owner: "mallory", Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := p.Beat(ctx); err != nil {
		t.Errorf("beat beside a fence signed with another key: %v, want none", err)
	}
	f := backup.Fence{Site: "ams1", Epoch: 2, Owner: "mallory", Host: "evil", Time: time.Now()}
	b, _ := json.Marshal(f)
	_, sig, _ := bytes.Cut(read(t, d, "metal-ams1.fence-000001"), []byte("\nmetal-sig"))
	plant(t, d, "metal-ams1.fence-000002", append(append(b, "\nmetal-sig"...), sig...))
	f.Epoch = 3
	b, _ = json.Marshal(f)
	plant(t, d, "metal-ams1.fence-000003", append(b, '\n'))
	if err := p.Beat(ctx); err != nil {
		t.Errorf("beat beside forged fences: %v, want none", err)
	}
	for _, name := range []string{"fence-000001", "fence-000002", "fence-000003"} {
		if !strings.Contains(primary.log.String(), name) {
			t.Errorf("the refused %s was not logged:\n%s", name, primary.log.String())
		}
	}
	if cur, ok, err := backup.CurrentFence(ctx, primary.r, "ams1"); ok || err != nil {
		t.Errorf("fence in force: %+v %v %v, want none", cur, ok, err)
	}
	standby := dialKeyed(t, d, key)
	pr, err := backup.Promote(ctx, standby.r, backup.PromoteOptions{Site: "ams1", Owner: "ams1-b", Margin: time.Second})
	if err != nil || pr.Fence.Epoch != 4 {
		t.Fatalf("promote: %+v %v, want the claim of epoch 4", pr.Fence, err)
	}
	if err := p.Beat(ctx); !errors.Is(err, backup.ErrFenced) || !strings.Contains(err.Error(), "ams1-b") {
		t.Errorf("beat after the genuine promote: %v, want ErrFenced naming ams1-b", err)
	}
}

// An encrypted snapshot holds no user_data (nor anything else) in clear;
// without the key, or with another, it cannot be restored; with the key it
// restores whole.
func TestEncryptedSnapshot(t *testing.T) {
	ctx := ctxT(t)
	d := startSSHD(t)
	key := newKey(t)
	primary := dialKeyed(t, d, key)
	src := newStore(t)
	const secret = "#cloud-config\npassword: hunter2-the-secret\n"
	if _, err := src.PutMachine(ctx, inventory.Machine{Name: "web-01", MAC: "52:54:00:00:07:01", State: inventory.StateReady,
		Intent: inventory.BootIntent{Task: &inventory.AgentTask{ID: "t1", Kind: inventory.TaskInstall, UserData: secret}}}); err != nil {
		t.Fatal(err)
	}
	res, err := backup.Backup(ctx, src, primary.r, backup.Options{Site: "ams1", Encrypt: true})
	if err != nil {
		t.Fatal(err)
	}
	file := read(t, d, res.Name)
	for _, clear := range []string{"user_data", "hunter2", "web-01", "metal-snapshot"} {
		if bytes.Contains(file, []byte(clear)) {
			t.Errorf("the encrypted snapshot holds %q in clear", clear)
		}
	}
	if !bytes.HasPrefix(file, []byte("age-encryption.org/v1\n")) {
		t.Errorf("the snapshot is not an age file: %q", file[:min(len(file), 40)])
	}
	for what, k := range map[string]*backup.Key{"no key": nil, "another key": newKey(t)} {
		if _, err := backup.Restore(ctx, dialKeyed(t, d, k).r, "ams1", res.Name, newStore(t), backup.RestoreOptions{}); err == nil {
			t.Errorf("restore with %s succeeded", what)
		} else {
			t.Logf("%s: %v", what, err)
		}
	}
	dst := newStore(t)
	if _, err := backup.Restore(ctx, dialKeyed(t, d, key).r, "ams1", res.Name, dst, backup.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if m, err := dst.Machine(ctx, "web-01"); err != nil || m.Intent.Task == nil || m.Intent.Task.UserData != secret {
		t.Errorf("restored web-01: %+v %v, want its user_data back", m.Intent, err)
	}
	if _, err := backup.Backup(ctx, src, dialKeyed(t, d, nil).r, backup.Options{Site: "ams1", Encrypt: true, Unless: -1}); err == nil {
		t.Error("an encrypted backup without a key succeeded")
	}
}
