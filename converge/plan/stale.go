package plan

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// Stale says why a plan made earlier (was, as metal plan --out saved it)
// differs from now, the plan of the same site computed again: for each
// machine whose change is not the same, each attribute observed otherwise
// now than when was was made (in the state store, or as its BMC reports
// a hardware setting), or else the two actions. Empty when the two plans
// make the same changes.
func Stale(was, now *Plan) []string {
	wasBy, nowBy := byMachine(was), byMachine(now)
	var out []string
	for _, n := range keys(wasBy, nowBy) {
		w, c := wasBy[n], nowBy[n]
		if sameJSON(w, c) {
			continue
		}
		var attrs []string
		// A machine provisioned or deprovisioned meanwhile is said as such,
		// not attribute by attribute.
		if wa, ca := actionOf(w), actionOf(c); wa == ca || !slices.Contains([]Action{Create, Delete}, wa) && !slices.Contains([]Action{Create, Delete}, ca) {
			attrs = attrsDiffer(n, w, c)
		}
		if len(attrs) == 0 {
			attrs = []string{fmt.Sprintf("%s: planned %s, now %s", n, actionOf(w), actionOf(c))}
		}
		out = append(out, attrs...)
	}
	return out
}

func byMachine(p *Plan) map[string]Change {
	out := make(map[string]Change, len(p.Changes))
	for _, c := range p.Changes {
		out[c.Machine] = c
	}
	return out
}

func actionOf(c Change) Action {
	if c.Action == "" {
		return NoOp
	}
	return c.Action
}

// attrsDiffer names the attributes of machine n whose change differs
// between w and c, with the value each plan started from: an attribute
// a plan leaves alone was already what the other plan makes it.
func attrsDiffer(n string, w, c Change) []string {
	wa, ca := attrsByName(w), attrsByName(c)
	var out []string
	for _, k := range keys(wa, ca) {
		a, aok := wa[k]
		b, bok := ca[k]
		if aok && bok && sameJSON(a, b) {
			continue
		}
		then, now := a.Before, b.Before
		if !aok {
			then = b.After
		}
		if !bok {
			now = a.After
		}
		where := "now"
		if IsHardware(k) {
			where = "now on its BMC"
		}
		out = append(out, fmt.Sprintf("%s %s: %s when planned, %s %s", n, k, showValue(then), showValue(now), where))
	}
	return out
}

func attrsByName(c Change) map[string]AttrChange {
	out := make(map[string]AttrChange, len(c.Attrs))
	for _, a := range c.Attrs {
		out[a.Name] = a
	}
	return out
}

func showValue(v *Value) string {
	switch {
	case v == nil:
		return "(none)"
	case v.Sensitive:
		return "(sensitive)"
	case v.Pending != "":
		return fmt.Sprintf("%q (%q pending)", v.Text, v.Pending)
	}
	return fmt.Sprintf("%q", v.Text)
}

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// keys are the names in a or b, sorted.
func keys[V any](a, b map[string]V) []string {
	out := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
