package atomicfile

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

func TestWrite(t *testing.T) {
	// A restrictive umask must not change the mode asked for.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	for name, tc := range map[string]struct {
		before []byte // nil: no file yet
		perm   os.FileMode
	}{
		"new file":         {perm: 0o644},
		"private":          {perm: 0o600},
		"replaces":         {before: []byte("old contents, longer than the new"), perm: 0o640},
		"narrows the mode": {before: []byte("x"), perm: 0o400},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			if tc.before != nil {
				if err := os.WriteFile(p, tc.before, 0o666); err != nil {
					t.Fatal(err)
				}
			}
			if err := Write(p, []byte("new"), tc.perm); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(p)
			if err != nil || string(b) != "new" {
				t.Errorf("read back %q, %v; want %q", b, err, "new")
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tc.perm {
				t.Errorf("mode %v, want %v", fi.Mode().Perm(), tc.perm)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("directory holds %d entries, want only the file (no temporary left)", len(ents))
			}
		})
	}
}

// TestWriteWhole reads the file while it is rewritten: every read sees
// one whole version, never a mix or an empty file.
func TestWriteWhole(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	a, b := make([]byte, 1<<16), make([]byte, 1<<16)
	for i := range a {
		a[i], b[i] = 'a', 'b'
	}
	if err := Write(p, a, 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			data := a
			if i%2 == 0 {
				data = b
			}
			if err := Write(p, data, 0o644); err != nil {
				t.Error(err)
				break
			}
		}
		close(stop)
	}()
	for reads := 0; ; reads++ {
		select {
		case <-stop:
			wg.Wait()
			return
		default:
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(a) || (string(got) != string(a) && string(got) != string(b)) {
			t.Fatalf("read %d: a torn file of %d bytes", reads, len(got))
		}
	}
}

func TestWriteMissingDir(t *testing.T) {
	p := filepath.Join(t.TempDir(), "no", "f")
	if err := Write(p, []byte("x"), 0o644); err == nil {
		t.Fatal("wrote into a directory that does not exist")
	}
}
