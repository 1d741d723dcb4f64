package api

import (
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/metal-dev/metal/inventory"
)

// Filter selects machines; the API's ?q=, ?state= and ?label= and the
// console's filter box mean the same thing.
type Filter struct {
	// Text matches a substring (case-insensitive) of the name, MAC, IP,
	// image or rack label.
	Text string
	// State matches the lifecycle state exactly.
	State inventory.State
	// Labels must all be present with these values.
	Labels map[string]string
}

// ParseFilter reads a Filter from query parameters q, state and label
// (repeatable, "key=value").
func ParseFilter(v url.Values) (Filter, error) {
	f := Filter{Text: strings.TrimSpace(v.Get("q")), State: inventory.State(v.Get("state"))}
	for _, l := range v["label"] {
		k, val, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return Filter{}, fmt.Errorf("label filter %q: want key=value", l)
		}
		if f.Labels == nil {
			f.Labels = map[string]string{}
		}
		f.Labels[k] = val
	}
	return f, nil
}

// Match reports whether m passes the filter.
func (f Filter) Match(m inventory.Machine) bool {
	if f.State != "" && m.State != f.State {
		return false
	}
	for k, v := range f.Labels {
		if got, ok := m.Identity.Labels[k]; !ok || got != v {
			return false
		}
	}
	if f.Text == "" {
		return true
	}
	t := strings.ToLower(f.Text)
	ip := ""
	if m.Identity.IP.IsValid() {
		ip = m.Identity.IP.String()
	}
	for _, s := range []string{m.Name, m.MAC, ip, m.Identity.Image, Rack(m), string(m.State)} {
		if strings.Contains(strings.ToLower(s), t) {
			return true
		}
	}
	return false
}

// Rack is the machine's rack: its "rack" label.
func Rack(m inventory.Machine) string { return m.Identity.Labels["rack"] }

// Run is an apply run as the API and console show it: the run with its
// steps in rollout order (batch, then machine).
type Run struct {
	inventory.ApplyRun
	Steps []inventory.ApplyStep `json:"steps"`
	// Failed counts the steps that failed.
	Failed int `json:"failed"`
	// Done counts the steps that finished.
	Done int `json:"done"`
}

// NewRun orders a run's steps for showing.
func NewRun(r inventory.ApplyRun) Run {
	out := Run{ApplyRun: r, Steps: make([]inventory.ApplyStep, 0, len(r.Steps))}
	out.ApplyRun.Steps = nil
	for _, s := range r.Steps {
		out.Steps = append(out.Steps, s)
		switch s.State {
		case inventory.RunFailed:
			out.Failed++
		case inventory.RunDone:
			out.Done++
		}
	}
	sort.Slice(out.Steps, func(i, j int) bool {
		a, b := out.Steps[i], out.Steps[j]
		if a.Batch != b.Batch {
			// Unassigned (0) last.
			if a.Batch == 0 || b.Batch == 0 {
				return b.Batch == 0
			}
			return a.Batch < b.Batch
		}
		return a.Machine < b.Machine
	})
	return out
}

// Batch is one batch of a run's steps.
type Batch struct {
	// Number is 1-based; 0 holds the steps not assigned to a batch.
	Number int
	Canary bool
	Steps  []inventory.ApplyStep
}

// Batches groups the run's steps by batch, in order.
func (r Run) Batches() []Batch {
	var out []Batch
	for _, s := range r.Steps {
		if len(out) == 0 || out[len(out)-1].Number != s.Batch {
			out = append(out, Batch{Number: s.Batch, Canary: s.Batch == 1 && r.Canary > 0})
		}
		out[len(out)-1].Steps = append(out[len(out)-1].Steps, s)
	}
	return out
}
