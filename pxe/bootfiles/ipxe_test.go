package bootfiles

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFindIPXE(t *testing.T) {
	full := t.TempDir()
	for _, n := range []string{BIOS, UEFI, UEFISNP} {
		must(t, os.WriteFile(filepath.Join(full, n), []byte(n), 0o644))
	}
	partial := t.TempDir()
	must(t, os.WriteFile(filepath.Join(partial, BIOS), []byte(BIOS), 0o644))

	t.Run("setting", func(t *testing.T) {
		x, err := FindIPXE(full)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{UEFI, UEFISNP, BIOS}, x.Names()); diff != "" {
			t.Errorf("names (-want +got):\n%s", diff)
		}
		if _, _, err := x.Open("../../etc/passwd"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open of a name that is no binary: %v", err)
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv(EnvDir, full)
		x, err := FindIPXE("")
		if err != nil {
			t.Fatal(err)
		}
		if x.Dir() != full {
			t.Errorf("dir %q, want %q", x.Dir(), full)
		}
	})
	t.Run("missing names the package", func(t *testing.T) {
		_, err := FindIPXE(partial)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		for _, want := range []string{"Debian package ipxe", UEFI, UEFISNP, EnvDir} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
}

// TestDebianIPXE checks the real thing that every netboot test relies on.
func TestDebianIPXE(t *testing.T) {
	x, err := FindIPXE(DefaultDir)
	if err != nil {
		t.Fatalf("%v", err)
	}
	f, fi, err := x.Open(UEFI) // a symlink to /boot/ipxe.efi on Debian
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi.Size() < 1024 {
		t.Errorf("%s is %d bytes", UEFI, fi.Size())
	}
}
