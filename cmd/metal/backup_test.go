package main

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
)

// sshArgs are the flags that make the verbs trust the test's sshd and
// offer its client key (and no agent of the user running the tests).
func sshArgs(d *sshdtest.Server) []string {
	return []string{"--known-hosts", d.KnownHosts, "-i", d.ClientKey}
}

var noAgent = map[string]string{"SSH_AUTH_SOCK": ""}

// machineSummary is what a backup must carry over of each machine.
func machineSummary(t *testing.T, s inventory.Store) []string {
	t.Helper()
	ms, _, err := s.Machines(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		hw := ""
		if m.Hardware != nil {
			hw = m.Hardware.DMI.Serial
		}
		out = append(out, strings.Join([]string{m.Name, m.MAC, string(m.State), m.Identity.IP.String(), hw}, " "))
	}
	return out
}

func snapshotsIn(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, ok := backup.ParseName(e.Name()); ok {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestBackupRestore backs a site's store up to a real sshd three times
// with --keep 2, then restores the latest into another site directory.
func TestBackupRestore(t *testing.T) {
	d := sshdtest.Start(t)
	target := d.URL("ams1")
	sitePath := stateSite(t)
	s := openSiteStore(t, sitePath)
	fillStore(t, s, time.Now())
	s.Close()

	for i := range 3 {
		if i > 0 { // a change between backups: a new revision, a new name
			s := openSiteStore(t, sitePath)
			if _, err := s.AppendEvent(testCtx(t), inventory.Event{Kind: inventory.EventApply, Message: "between backups"}); err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
		code, stdout, stderr := metal(t, noAgent, append([]string{"backup", "--site", sitePath, "--to", target, "--keep", "2"}, sshArgs(d)...)...)
		if code != 0 {
			t.Fatalf("backup %d: exit %d: %s", i, code, stderr)
		}
		if !strings.Contains(stdout, "Snapshot metal-ams1-") || (i == 2) != strings.Contains(stdout, "Deleted 1 older") {
			t.Errorf("backup %d said:\n%s", i, stdout)
		}
	}
	snaps := snapshotsIn(t, filepath.Join(d.Dir, "ams1"))
	if len(snaps) != 2 {
		t.Fatalf("snapshots kept: %v, want 2", snaps)
	}

	s = openSiteStore(t, sitePath)
	want := machineSummary(t, s)
	all, err := s.Events(testCtx(t), inventory.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	restored := stateSite(t)
	code, stdout, stderr := metal(t, noAgent, append([]string{"restore", "--site", restored, "--from", target + "/latest"}, sshArgs(d)...)...)
	if code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "Restored snapshot of site ams1") {
		t.Errorf("restore said: %s", stdout)
	}
	s = openSiteStore(t, restored)
	if d := cmp.Diff(want, machineSummary(t, s)); d != "" {
		t.Errorf("restored machines (-want +got):\n%s", d)
	}
	evs, err := s.Events(testCtx(t), inventory.EventQuery{})
	if err != nil || len(evs) != len(all) {
		t.Errorf("restored %d events (%v), want %d", len(evs), err, len(all))
	}
	s.Close()

	// Into a store that holds data: refused, unless --replace; a named
	// snapshot (the older one) can be restored too.
	code, _, stderr = metal(t, noAgent, append([]string{"restore", "--site", restored, "--from", target + "/" + snaps[0]}, sshArgs(d)...)...)
	if code != 1 || !strings.Contains(stderr, "--replace") {
		t.Errorf("restore over data: exit %d: %s", code, stderr)
	}
	code, _, stderr = metal(t, noAgent, append([]string{"restore", "--site", restored, "--replace", "--from", target + "/" + snaps[0]}, sshArgs(d)...)...)
	if code != 0 {
		t.Fatalf("restore --replace: exit %d: %s", code, stderr)
	}
	s = openSiteStore(t, restored)
	if evs, err := s.Events(testCtx(t), inventory.EventQuery{}); err != nil || len(evs) != len(all)-1 {
		t.Errorf("older snapshot restored %d events (%v), want %d (one 'between backups' fewer)", len(evs), err, len(all)-1)
	}
	s.Close()
}

// TestBackupRefusesUnknownHost: a server whose key known_hosts lacks is
// never written to, and the error says how to trust it.
func TestBackupRefusesUnknownHost(t *testing.T) {
	d := sshdtest.Start(t)
	d.Trust(nil)
	sitePath := stateSite(t)
	code, _, stderr := metal(t, noAgent, append([]string{"backup", "--site", sitePath, "--to", d.URL("ams1")}, sshArgs(d)...)...)
	if code != 1 || !strings.Contains(stderr, "ssh-keyscan") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(d.Dir, "ams1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("something was written to an untrusted server: %v", err)
	}
}

// TestStandbyPromote: a standby pulls the primary's snapshot, promote
// refuses while the primary beats, is forced, and the primary is fenced.
func TestStandbyPromote(t *testing.T) {
	d := sshdtest.Start(t)
	target := d.URL("ams1")
	primary := stateSite(t)
	s := openSiteStore(t, primary)
	fillStore(t, s, time.Now())
	want := machineSummary(t, s)
	s.Close()
	if code, _, stderr := metal(t, noAgent, append([]string{"backup", "--site", primary, "--to", target}, sshArgs(d)...)...); code != 0 {
		t.Fatalf("backup: %s", stderr)
	}

	standby := stateSite(t)
	// An empty standby is not promoted.
	code, _, stderr := metal(t, noAgent, append([]string{"promote", "--site", standby, "--from", target}, sshArgs(d)...)...)
	if code != 1 || !strings.Contains(stderr, "holds no replica") {
		t.Errorf("promote of an empty standby: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := metal(t, noAgent, append([]string{"standby", "--site", standby, "--from", target, "--once"}, sshArgs(d)...)...)
	if code != 0 || !strings.Contains(stdout, "replica now holds metal-ams1-") {
		t.Fatalf("standby --once: exit %d: %s%s", code, stdout, stderr)
	}
	s = openSiteStore(t, standby)
	if d := cmp.Diff(want, machineSummary(t, s)); d != "" {
		t.Errorf("replica machines (-want +got):\n%s", d)
	}
	s.Close()

	// The primary is alive: it beats (as metal serve does with a backup
	// target).
	ctx := testCtx(t)
	tgt, err := backup.ParseTarget(target)
	if err != nil {
		t.Fatal(err)
	}
	r, err := backup.Dial(ctx, tgt, backup.SSHOptions{KnownHosts: d.KnownHosts, KeyFiles: []string{d.ClientKey}, AgentSocket: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := &backup.Primary{Remote: r, Site: "ams1", Owner: "ams1-a", Interval: time.Minute}
	if err := p.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = metal(t, noAgent, append([]string{"promote", "--site", standby, "--from", target, "--owner", "ams1-b"}, sshArgs(d)...)...)
	if code != 1 || !strings.Contains(stderr, "or stop it and force") {
		t.Errorf("promote over a live primary: exit %d: %s", code, stderr)
	}
	if err := p.Beat(ctx); err != nil {
		t.Fatalf("primary fenced by a refused promote: %v", err)
	}
	code, stdout, stderr = metal(t, noAgent, append([]string{"promote", "--site", standby, "--from", target, "--owner", "ams1-b", "--force"}, sshArgs(d)...)...)
	if code != 0 || !strings.Contains(stdout, "ams1-b is now its active instance") || !strings.Contains(stdout, "cannot guarantee") {
		t.Fatalf("promote --force: exit %d: %s%s", code, stdout, stderr)
	}
	if err := p.Beat(ctx); !errors.Is(err, backup.ErrFenced) {
		t.Errorf("old primary's heartbeat after promote: %v, want ErrFenced", err)
	}
}

// TestServePrimary is the primary side that `metal serve --backup-to`
// runs: it refuses to start once fenced, ships snapshots and heartbeats
// while it runs, keeps a standby's unforced promote out, and stops
// (ErrFenced) when a standby is promoted over it.
func TestServePrimary(t *testing.T) {
	d := sshdtest.Start(t)
	target := d.URL("ams1")
	ctx := testCtx(t)
	sitePath := stateSite(t)
	s := openSiteStore(t, sitePath)
	defer s.Close()
	fillStore(t, s, time.Now())
	f := arguments.Primary{To: target, Every: time.Second, Keep: 2, Owner: "ams1-a",
		SSH: arguments.SSH{KnownHosts: d.KnownHosts, Identities: []string{d.ClientKey}, Timeout: 5 * time.Second}}
	t.Setenv("SSH_AUTH_SOCK", "")
	stateDir := filepath.Dir(sitePath)
	p, err := f.Start(ctx, slog.New(slog.DiscardHandler), "ams1", stateDir)
	if err != nil {
		t.Fatalf("start the primary: %v", err)
	}
	ran := make(chan error, 1)
	go func() { ran <- p.Serve(ctx, s) }()
	dir := filepath.Join(d.Dir, "ams1")
	waitSnapshots := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); len(snapshotsIn(t, dir)) < n; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the primary wrote %v in 30 s, want %d snapshots", snapshotsIn(t, dir), n)
			}
		}
	}
	waitSnapshots(1)
	// Three intervals of an unchanged store: no new snapshot.
	time.Sleep(3 * f.Every)
	if got := snapshotsIn(t, dir); len(got) != 1 {
		t.Errorf("snapshots of an unchanged store: %v, want the first alone", got)
	}
	if _, err := s.AppendEvent(ctx, inventory.Event{Machine: "web-01", Kind: inventory.EventAgent}); err != nil {
		t.Fatal(err)
	}
	waitSnapshots(2)

	standby := stateSite(t)
	if code, _, stderr := metal(t, noAgent, append([]string{"standby", "--site", standby, "--from", target, "--once"}, sshArgs(d)...)...); code != 0 {
		t.Fatalf("standby --once: %s", stderr)
	}
	promote := append([]string{"promote", "--site", standby, "--from", target, "--owner", "ams1-b"}, sshArgs(d)...)
	if code, _, stderr := metal(t, noAgent, promote...); code != 1 || !strings.Contains(stderr, "primary is alive") {
		t.Fatalf("promote over the running primary: exit %d: %s", code, stderr)
	}
	if code, _, stderr := metal(t, noAgent, append(promote, "--force")...); code != 0 {
		t.Fatalf("promote --force: %s", stderr)
	}
	select {
	case err := <-ran:
		if !errors.Is(err, backup.ErrFenced) {
			t.Errorf("the primary after a promote: %v, want ErrFenced", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the primary still runs 30 s after a standby was promoted over it")
	}
	if got := len(snapshotsIn(t, dir)); got > 2 {
		t.Errorf("%d snapshots kept, want at most --backup-keep 2", got)
	}

	// The fenced instance is marked: the verbs that serve or change
	// machines refuse, naming the mark and how to clear it.
	s.Close()
	mark := backup.MarkPath(stateDir, "ams1")
	for _, args := range [][]string{
		{"apply", "--auto-approve", "--site", sitePath},
		{"serve", "--site", sitePath},
		{"bmc", "off", "--site", sitePath},
		{"bmc", "bootdev", "pxe", "--site", sitePath},
	} {
		code, _, stderr := metal(t, noAgent, args...)
		if code != 1 || !strings.Contains(stderr, mark) || !strings.Contains(stderr, "metal promote") || !strings.Contains(stderr, "ams1-b") {
			t.Errorf("metal %s on the fenced instance: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
	}

	// Back again: the old owner is refused before it serves; the promoted
	// one starts, and clears the mark.
	if _, err := f.Start(ctx, slog.New(slog.DiscardHandler), "ams1", stateDir); !errors.Is(err, backup.ErrFenced) {
		t.Errorf("the old primary starting again: %v, want ErrFenced", err)
	}
	f.Owner = "ams1-b"
	p, err = f.Start(ctx, slog.New(slog.DiscardHandler), "ams1", stateDir)
	if err != nil {
		t.Fatalf("the promoted owner starting: %v", err)
	}
	p.Remote.Close()
	if err := backup.CheckMark(stateDir, "ams1"); err != nil {
		t.Errorf("the mark after the owner's heartbeat was confirmed: %v", err)
	}
}

// TestBackupKeyEncrypt: keygen, an encrypted and signed backup, a restore
// without the key refused, one with it whole.
func TestBackupKeyEncrypt(t *testing.T) {
	d := sshdtest.Start(t)
	target := d.URL("ams1")
	sitePath := stateSite(t)
	s := openSiteStore(t, sitePath)
	fillStore(t, s, time.Now())
	want := machineSummary(t, s)
	s.Close()
	key := filepath.Join(t.TempDir(), "backup.key")
	if code, stdout, stderr := metal(t, nil, "backup", "keygen", key); code != 0 || !strings.Contains(stdout, "Backup key") {
		t.Fatalf("keygen: exit %d: %s%s", code, stdout, stderr)
	}
	if code, _, stderr := metal(t, nil, "backup", "keygen", key); code == 0 {
		t.Errorf("keygen over an existing key succeeded: %s", stderr)
	}
	if code, _, stderr := metal(t, noAgent, append([]string{"backup", "--site", sitePath, "--to", target, "--encrypt"}, sshArgs(d)...)...); code != 2 || !strings.Contains(stderr, "--key") {
		t.Errorf("--encrypt without --key: exit %d: %s", code, stderr)
	}
	code, _, stderr := metal(t, noAgent, append([]string{"backup", "--site", sitePath, "--to", target, "--encrypt", "--key", key}, sshArgs(d)...)...)
	if code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	snaps := snapshotsIn(t, filepath.Join(d.Dir, "ams1"))
	b, err := os.ReadFile(filepath.Join(d.Dir, "ams1", snaps[0]))
	if err != nil || !strings.HasPrefix(string(b), "age-encryption.org/v1") {
		t.Fatalf("the snapshot is not sealed: %v %.40q", err, b)
	}
	restored := stateSite(t)
	if code, _, stderr := metal(t, noAgent, append([]string{"restore", "--site", restored, "--from", target}, sshArgs(d)...)...); code == 0 || !strings.Contains(stderr, "--key") {
		t.Errorf("restore without the key: exit %d: %s", code, stderr)
	}
	if code, _, stderr := metal(t, noAgent, append([]string{"restore", "--site", restored, "--from", target, "--key", key}, sshArgs(d)...)...); code != 0 {
		t.Fatalf("restore with the key: exit %d: %s", code, stderr)
	}
	s = openSiteStore(t, restored)
	defer s.Close()
	if d := cmp.Diff(want, machineSummary(t, s)); d != "" {
		t.Errorf("restored machines (-want +got):\n%s", d)
	}
}
