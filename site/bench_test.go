package site_test

import (
	"testing"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/site"
)

// BenchmarkLoadAndPlan10k is validate + plan of a 10,000-machine site, the
// figure `make bench` reports (target: under a second).
func BenchmarkLoadAndPlan10k(b *testing.B) {
	src := site.GenerateSite(40, 250)
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		res, diags := site.Load("bench.hcl", src, site.Options{})
		if diags.HasErrors() {
			b.Fatal(diags)
		}
		if p := plan.Compute(res.Site, nil); p.Summary.Create != 10000 {
			b.Fatalf("plan creates %d", p.Summary.Create)
		}
	}
}
