package dhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func storeLease(i int, expiry time.Time) Lease {
	return Lease{MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}),
		Hostname: "h" + string(rune('a'+i)), Expiry: expiry}
}

var leaseCmp = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
}

// loadFresh reads path with a new store, as a restarted server does.
func loadFresh(t *testing.T, path string) []Lease {
	t.Helper()
	got, err := NewFileStore(path).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestFileStoreSaves: whatever sequence of tables was saved, through the
// journal or through snapshots, a fresh store loads the last one.
func TestFileStoreSaves(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 15, 0, 0, 123456789, time.UTC)
	declined := storeLease(3, t0)
	declined.Declined = true
	renewed := storeLease(1, t0.Add(time.Hour))
	moved := storeLease(2, t0)
	moved.IP = netip.MustParseAddr("192.0.2.99")
	tables := map[string][][]Lease{
		"one table":    {{storeLease(1, t0), storeLease(2, t0)}},
		"renewal":      {{storeLease(1, t0), storeLease(2, t0)}, {renewed, storeLease(2, t0)}},
		"removal":      {{storeLease(1, t0), storeLease(2, t0)}, {storeLease(2, t0)}},
		"move":         {{storeLease(1, t0), storeLease(2, t0)}, {storeLease(1, t0), moved}},
		"decline":      {{storeLease(1, t0), storeLease(3, t0)}, {storeLease(1, t0), declined}},
		"to empty":     {{storeLease(1, t0)}, {}},
		"unchanged":    {{storeLease(1, t0)}, {storeLease(1, t0)}, {storeLease(1, t0)}},
		"empty at all": {{}},
		// Each Save is compared with what the files hold after the one
		// before: leases that come back, and a renewal undone.
		"come and go": {{storeLease(1, t0), storeLease(2, t0)}, {storeLease(2, t0)}, {storeLease(1, t0), storeLease(2, t0)},
			{storeLease(1, t0)}, {storeLease(3, t0), storeLease(1, t0), storeLease(2, t0)}, {}, {storeLease(3, t0)}},
		"renewal undone": {{storeLease(1, t0)}, {renewed}, {storeLease(1, t0)}},
		"removal and a change in one": {{storeLease(1, t0), storeLease(2, t0), storeLease(3, t0)}, {renewed, storeLease(3, t0)},
			{renewed, storeLease(2, t0)}},
	}
	for name, saves := range tables {
		for _, compactEvery := range []int64{minJournalBytes, 1} {
			t.Run(name+map[bool]string{true: "/journal", false: "/snapshots"}[compactEvery > 1], func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "leases.json")
				f := NewFileStore(path)
				f.minJournal = compactEvery
				if _, err := f.Load(context.Background()); err != nil {
					t.Fatal(err)
				}
				for _, table := range saves {
					if err := f.Save(context.Background(), table); err != nil {
						t.Fatal(err)
					}
				}
				want := saves[len(saves)-1]
				got := loadFresh(t, path)
				if diff := cmp.Diff(want, got, leaseCmp, cmpEmptyNil); diff != "" {
					t.Errorf("loaded (-saved +loaded):\n%s", diff)
				}
				if got, err := f.Load(context.Background()); err != nil || cmp.Diff(want, got, leaseCmp, cmpEmptyNil) != "" {
					t.Errorf("the saving store itself loads %v, %v", got, err)
				}
			})
		}
	}
}

var cmpEmptyNil = cmp.FilterValues(func(a, b []Lease) bool { return len(a) == 0 && len(b) == 0 }, cmp.Ignore())

// TestFileStoreJournal: after the first Save, a renewal costs one record
// appended; the journal is folded into a snapshot once it outgrows it
// (journalPerSnapshot times the snapshot), which names the next journal,
// and the old journal goes.
func TestFileStoreJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	f := NewFileStore(path)
	f.minJournal = 1
	t0 := time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	table := []Lease{storeLease(1, t0), storeLease(2, t0)}
	if err := f.Save(context.Background(), table); err != nil {
		t.Fatal(err)
	}
	// What each Save left: "snapshot" when it wrote one, else the journal's
	// name and length in records.
	var got []string
	for i := range 80 {
		table[0].Expiry = t0.Add(time.Duration(i+1) * time.Minute)
		before, _ := os.ReadFile(path)
		if err := f.Save(context.Background(), table); err != nil {
			t.Fatal(err)
		}
		if after, _ := os.ReadFile(path); string(after) != string(before) {
			got = append(got, "snapshot")
		}
		journals, _ := filepath.Glob(path + ".journal-*")
		for _, j := range journals {
			b, _ := os.ReadFile(j)
			got = append(got, fmt.Sprintf("%s %d", strings.TrimPrefix(j, path), strings.Count(string(b), "\n")))
		}
	}
	// Each journal grows by one record a Save, up to the same length
	// (the snapshot's size does not change), then a snapshot names the
	// next one.
	var want []string
	runs := strings.Count(strings.Join(got, ","), "snapshot")
	if runs < 2 {
		t.Fatalf("%d snapshots in 80 renewals, want several: %v", runs, got)
	}
	length := slices.Index(got, "snapshot")
	for seq := 1; len(want) < len(got); seq++ {
		for n := 1; n <= length; n++ {
			want = append(want, fmt.Sprintf(".journal-%d %d", seq, n))
		}
		want = append(want, "snapshot")
	}
	if diff := cmp.Diff(want[:len(got)], got); diff != "" {
		t.Errorf("files after each Save (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(table, loadFresh(t, path), leaseCmp); diff != "" {
		t.Errorf("loaded (-saved +loaded):\n%s", diff)
	}
}

// TestFileStoreCrashes: what a crash can leave behind loads as the last
// table saved (or, for a torn record, the one before it).
func TestFileStoreCrashes(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	first := []Lease{storeLease(1, t0), storeLease(2, t0)}
	second := []Lease{storeLease(1, t0.Add(time.Hour)), storeLease(2, t0)}
	tests := map[string]struct {
		damage  func(t *testing.T, path string)
		want    []Lease
		wantErr string
	}{
		"nothing": {damage: func(*testing.T, string) {}, want: second},
		"torn last record": {damage: func(t *testing.T, path string) {
			appendFile(t, path+".journal-1", `{"mac":"02:00:00:00:00:02","ip":"192.0.2.1`)
		}, want: second},
		"old journal left beside a new snapshot": {damage: func(t *testing.T, path string) {
			// journal-0 is the one before the first snapshot, which
			// named journal-1: its records are older than the snapshot.
			appendFile(t, path+".journal-0", `{"mac":"02:00:00:00:00:09","ip":"192.0.2.11","expiry":"2020-01-01T00:00:00Z"}`+"\n")
		}, want: second},
		"damaged record mid-journal": {damage: func(t *testing.T, path string) {
			b, _ := os.ReadFile(path + ".journal-1")
			os.WriteFile(path+".journal-1", append([]byte("{oops\n"), b...), 0o600)
		}, wantErr: "line 1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases.json")
			f := NewFileStore(path)
			for _, table := range [][]Lease{first, second} {
				if err := f.Save(context.Background(), table); err != nil {
					t.Fatal(err)
				}
			}
			tc.damage(t, path)
			got, err := NewFileStore(path).Load(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, leaseCmp); diff != "" {
				t.Errorf("loaded (-want +got):\n%s", diff)
			}
			// Saving after a torn record starts a new journal: the next
			// restart reads no record after the torn one.
			f2 := NewFileStore(path)
			third := []Lease{storeLease(1, t0.Add(2*time.Hour))}
			if err := f2.Save(context.Background(), third); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(third, loadFresh(t, path), leaseCmp); diff != "" {
				t.Errorf("loaded after a further save (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFileStoreReadsVersion1: a lease file written before journals (no
// journal number) loads as it did.
func TestFileStoreReadsVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	old := `{"version":1,"leases":[{"mac":"02:00:00:00:00:01","ip":"192.0.2.11","hostname":"hb","expiry":"2026-11-23T15:00:00Z"}]}`
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	want := []Lease{storeLease(1, time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC))}
	if diff := cmp.Diff(want, loadFresh(t, path), leaseCmp); diff != "" {
		t.Errorf("loaded (-want +got):\n%s", diff)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}
