package site_test

import (
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/site"
)

// TestLoadParallelSameAsSerial: a for_each large enough to be evaluated
// on every CPU gives the same machines, in the same order, as on one
// (run with -race, this also checks the workers share nothing mutable).
func TestLoadParallelSameAsSerial(t *testing.T) {
	src := site.GenerateSite(6, 200)
	load := func(procs int) []string {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		res, diags := site.Load("gen.hcl", src, site.Options{})
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		var out []string
		for _, m := range res.Site.Machines {
			out = append(out, m.Name+" "+m.MAC.String()+" "+m.IP.String()+" "+m.Labels["rack"])
		}
		return out
	}
	serial, parallel := load(1), load(4)
	if len(serial) != 1200 {
		t.Fatalf("%d machines, want 1200", len(serial))
	}
	if d := cmp.Diff(serial, parallel); d != "" {
		t.Errorf("parallel load differs (-serial +parallel):\n%s", d)
	}
}
