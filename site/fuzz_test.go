package site_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/site"
)

// FuzzLoad feeds arbitrary bytes to the loader: it must return diagnostics,
// never panic, and a site it accepts must plan.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("../hcl-examples/*.hcl")
	more, _ := filepath.Glob("testdata/*.hcl")
	for _, p := range append(seeds, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	opts := site.Options{Limits: site.Limits{MaxFileBytes: 1 << 20, MaxMachines: 2000}}
	f.Fuzz(func(t *testing.T, src []byte) {
		res, diags := site.Load("fuzz.hcl", src, opts)
		if diags.HasErrors() {
			if res.Site != nil {
				t.Fatal("site returned with errors")
			}
			return
		}
		plan.Compute(res.Site, nil)
	})
}
