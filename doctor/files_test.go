package doctor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/site"
)

// TestCheckSignedChain: a site with a secureboot machine is told whether
// the signed chain is where it says; other sites are not asked about it.
func TestCheckSignedChain(t *testing.T) {
	if _, err := bootfiles.FindIPXE(""); err != nil {
		t.Skip(err)
	}
	full, empty := t.TempDir(), t.TempDir()
	for _, n := range []string{bootfiles.Shim, bootfiles.GRUB} {
		if err := os.WriteFile(filepath.Join(full, n), []byte("signed"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, tc := range map[string]struct {
		dir, machine string
		want         []Status
	}{
		"no secureboot machine": {dir: empty, machine: `boot = "ipxe"`, want: []Status{OK}},
		"chain found":           {dir: full, machine: `secure_boot = true`, want: []Status{OK, OK}},
		"chain missing":         {dir: empty, machine: `boot = "secureboot"`, want: []Status{OK, Fail}},
	} {
		t.Run(name, func(t *testing.T) {
			src := "site \"t\" {\n  secureboot_dir = \"" + tc.dir + "\"\n}\nnetwork \"lan\" {\n  subnet = \"192.0.2.0/24\"\n  mode = \"off\"\n}\n" +
				"machine \"a\" {\n  mac = \"52:54:00:00:00:01\"\n  " + tc.machine + "\n}\n"
			res, diags := site.Load("site.hcl", []byte(src), site.Options{})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			checks := checkIPXE(res.Site)
			var got []Status
			for _, c := range checks {
				got = append(got, c.Status)
			}
			if len(got) != len(tc.want) || got[len(got)-1] != tc.want[len(tc.want)-1] {
				t.Errorf("checks %+v, want statuses %v", checks, tc.want)
			}
		})
	}
}
