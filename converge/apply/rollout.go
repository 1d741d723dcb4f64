package apply

import (
	"sort"

	"github.com/metal-dev/metal/site"
)

// Batches splits the machines to change (in plan order) into the rollout's
// batches: the canary alone first, then batches of BatchSize machines (or
// BatchPercent of them, rounded up), never spanning two values of the By
// label (labelOf gives a machine's value). With neither size, each label
// value is one batch, or everything is, with no By. The second result is
// the batch size used (0: unbounded).
func Batches(r site.Rollout, names []string, labelOf func(name string) string) ([][]string, int) {
	if len(names) == 0 {
		return nil, 0
	}
	size := r.BatchSize
	if r.BatchPercent > 0 {
		size = max(1, (len(names)*r.BatchPercent+99)/100)
	}
	// Group by the label's value, groups in value order, machines in the
	// order given.
	var groups [][]string
	if r.By == "" {
		groups = [][]string{names}
	} else {
		idx := map[string]int{}
		var values []string
		for _, n := range names {
			v := labelOf(n)
			if _, ok := idx[v]; !ok {
				idx[v] = len(values)
				values = append(values, v)
				groups = append(groups, nil)
			}
			groups[idx[v]] = append(groups[idx[v]], n)
		}
		order := make([]int, len(values))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(i, j int) bool { return values[order[i]] < values[order[j]] })
		sorted := make([][]string, len(groups))
		for i, o := range order {
			sorted[i] = groups[o]
		}
		groups = sorted
	}

	var out [][]string
	if c := min(r.Canary, len(names)); c > 0 {
		// The canary comes from the first groups, so it exercises one
		// failure domain.
		var canary []string
		for gi := 0; len(canary) < c; gi++ {
			take := min(c-len(canary), len(groups[gi]))
			canary = append(canary, groups[gi][:take]...)
			groups[gi] = groups[gi][take:]
		}
		out = append(out, canary)
	}
	for _, g := range groups {
		for len(g) > 0 {
			n := len(g)
			if size > 0 {
				n = min(size, n)
			}
			out = append(out, g[:n])
			g = g[n:]
		}
	}
	return out, size
}
