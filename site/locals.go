package site

import (
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// decodeLocals evaluates the locals blocks in dependency order, so a local
// may use another whatever order they are written in. A cycle is an error
// naming every local on it.
func (l *loader) decodeLocals(blocks []*hcl.Block) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	attrs := map[string]*hcl.Attribute{}
	for _, b := range blocks {
		as, moreDiags := b.Body.JustAttributes()
		diags = append(diags, moreDiags...)
		for name, a := range as {
			if prev, ok := attrs[name]; ok {
				diags = append(diags, errorAt(a.NameRange, "Duplicate local value",
					"Local %q was already defined at %s.", name, where(prev.NameRange)))
				continue
			}
			attrs[name] = a
		}
	}

	// deps[name] lists the locals that name refers to.
	deps := map[string][]string{}
	for name, a := range attrs {
		for _, tr := range a.Expr.Variables() {
			if tr.RootName() != "local" || len(tr) < 2 {
				continue
			}
			if ta, ok := tr[1].(hcl.TraverseAttr); ok {
				if _, known := attrs[ta.Name]; known {
					deps[name] = append(deps[name], ta.Name)
				}
			}
		}
	}

	vals := map[string]cty.Value{}
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(name string) bool
	visit = func(name string) bool {
		switch state[name] {
		case done:
			return true
		case visiting:
			i := 0
			for stack[i] != name {
				i++
			}
			cycle := append(append([]string{}, stack[i:]...), name)
			diags = append(diags, errorAt(attrs[name].NameRange, "Cycle in local values",
				"Local values refer to each other in a loop: local.%s.", strings.Join(cycle, " → local.")))
			return false
		}
		state[name] = visiting
		stack = append(stack, name)
		ok := true
		for _, dep := range deps[name] {
			if !visit(dep) {
				ok = false
				break
			}
		}
		stack = stack[:len(stack)-1]
		state[name] = done
		if !ok {
			return false
		}
		l.ctx.Variables["local"] = objectOf(vals)
		v, moreDiags := attrs[name].Expr.Value(l.ctx)
		diags = append(diags, moreDiags...)
		if moreDiags.HasErrors() {
			return false
		}
		vals[name] = v
		return true
	}
	for _, name := range sortedKeys(attrs) {
		if state[name] == unvisited {
			visit(name)
		}
	}
	return vals, diags
}
