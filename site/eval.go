package site

import (
	"fmt"
	"math/big"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// markSensitive marks values that came from sensitive variables. go-cty
// carries marks through expressions and functions, so anything derived from
// a secret stays marked and is never printed.
const markSensitive = "sensitive"

var (
	listOfDynamic = cty.List(cty.DynamicPseudoType)
	setOfDynamic  = cty.Set(cty.DynamicPseudoType)
	stringType    = cty.String
	numberType    = cty.Number
)

// evaluator evaluates attribute expressions into Go values, collecting
// diagnostics. A value computed from a sensitive variable is refused
// (with a diagnostic saying why) unless the attribute is one metal can
// hide: those are read with the secret* methods, which say that the value
// is sensitive so the model can carry that along.
type evaluator struct {
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics
	// secretOK lets every value be sensitive: a variable's own
	// validation reads its (maybe sensitive) value.
	secretOK bool
}

// value evaluates expr and converts it to want; it returns cty.NilVal (and
// records a diagnostic) when that fails, the result is null, or it is
// sensitive where metal cannot hide it.
func (e *evaluator) value(attr *hcl.Attribute, want cty.Type) (cty.Value, bool) {
	v, _, ok := e.valueMarks(attr, want, e.secretOK)
	return v, ok
}

// cannotHide says why an attribute's value would show if it were
// sensitive; attributes not named here are shown somewhere too (plans,
// lists, logs, the boot network).
var cannotHide = map[string]string{
	"name":     "it names the machine in every list, event and log",
	"mac":      "a MAC is sent on the boot network in clear and keys the machine in every list",
	"ip":       "an address is sent on the boot network in clear and shown in every list",
	"hostname": "the hostname is sent to the machine over DHCP and shown in every list",
	"for_each": "its keys name machines and its values reach attributes metal cannot hide",
	"count":    "it decides which machines exist",
	"address":  "the BMC address is shown in lists and logs of every BMC call",
	"by":       "the rollout's batches are named by it",
}

// valueMarks is value that may let a sensitive value through (allow),
// returning the paths of the value that were marked.
func (e *evaluator) valueMarks(attr *hcl.Attribute, want cty.Type, allow bool) (cty.Value, []cty.PathValueMarks, bool) {
	v, diags := attr.Expr.Value(e.ctx)
	e.diags = append(e.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal, nil, false
	}
	if !v.IsWhollyKnown() {
		e.diags = append(e.diags, errorAt(attr.Expr.Range(), "Value not known",
			"The value of %q cannot be known while loading the site.", attr.Name))
		return cty.NilVal, nil, false
	}
	v, marks := v.UnmarkDeepWithPaths()
	if v.IsNull() {
		return cty.NilVal, nil, false
	}
	if len(marks) > 0 && !allow {
		why := cannotHide[attr.Name]
		if why == "" {
			why = "metal shows this attribute in plans, lists or logs, or sends it on the network"
		}
		e.diags = append(e.diags, errorAt(attr.Expr.Range(), "Sensitive value cannot be hidden",
			"%q is computed from a sensitive variable, but metal cannot keep it secret: %s. "+
				"Use a value that is not sensitive here (a variable without sensitive = true), or keep the secret out of this attribute. "+
				"Sensitive values may feed: labels (except rack and the rollout's by), user_data, ssh_authorized_keys, "+
				"the bmc's username and password, and an image's kernel, initrd, disk and cmdline.", attr.Name, why))
		return cty.NilVal, nil, false
	}
	cv, err := convert.Convert(v, want)
	if err != nil {
		e.diags = append(e.diags, errorAt(attr.Expr.Range(), "Incorrect attribute value type",
			"Inappropriate value for %q: %s.", attr.Name, err))
		return cty.NilVal, nil, false
	}
	if len(marks) > 0 {
		cv = cv.Mark(markSensitive)
	}
	return cv, marks, true
}

// secretStr is str for an attribute metal can hide: sensitive says the
// value came from a sensitive variable.
func (e *evaluator) secretStr(attr *hcl.Attribute) (s string, sensitive bool) {
	if attr == nil {
		return "", false
	}
	v, marks, ok := e.valueMarks(attr, cty.String, true)
	if !ok {
		return "", false
	}
	v, _ = v.Unmark()
	return v.AsString(), len(marks) > 0
}

// secretStrMap is strMap for an attribute metal can hide, and the keys
// whose values are sensitive.
func (e *evaluator) secretStrMap(attr *hcl.Attribute) (map[string]string, map[string]bool) {
	if attr == nil {
		return nil, nil
	}
	v, marks, ok := e.valueMarks(attr, cty.Map(cty.String), true)
	if !ok {
		return nil, nil
	}
	v, _ = v.Unmark()
	out := make(map[string]string, v.LengthInt())
	var secret map[string]bool
	mark := func(k string) {
		if secret == nil {
			secret = map[string]bool{}
		}
		secret[k] = true
	}
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		if !ev.IsNull() {
			out[k.AsString()] = ev.AsString()
		}
	}
	for _, pm := range marks {
		if len(pm.Path) == 0 {
			for k := range out {
				mark(k) // the whole map is sensitive
			}
			continue
		}
		switch st := pm.Path[0].(type) {
		case cty.GetAttrStep:
			mark(st.Name)
		case cty.IndexStep:
			if st.Key.Type() == cty.String {
				mark(st.Key.AsString())
			}
		}
	}
	return out, secret
}

// secretStrList is strList for an attribute metal can hide.
func (e *evaluator) secretStrList(attr *hcl.Attribute) ([]string, bool) {
	if attr == nil {
		return nil, false
	}
	v, marks, ok := e.valueMarks(attr, cty.List(cty.String), true)
	if !ok {
		return nil, false
	}
	v, _ = v.Unmark()
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, ev := it.Element()
		if !ev.IsNull() {
			out = append(out, ev.AsString())
		}
	}
	return out, len(marks) > 0
}

func (e *evaluator) str(attr *hcl.Attribute) (s string, sensitive, ok bool) {
	if attr == nil {
		return "", false, false
	}
	v, ok := e.value(attr, cty.String)
	if !ok {
		return "", false, false
	}
	sensitive = v.IsMarked()
	v, _ = v.Unmark()
	return v.AsString(), sensitive, true
}

func (e *evaluator) strList(attr *hcl.Attribute) []string {
	if attr == nil {
		return nil
	}
	v, ok := e.value(attr, cty.List(cty.String))
	if !ok {
		return nil
	}
	v, _ = v.Unmark()
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, ev := it.Element()
		if ev.IsNull() {
			e.diags = append(e.diags, errorAt(attr.Expr.Range(), "Null list element", "%q must not contain null.", attr.Name))
			continue
		}
		out = append(out, ev.AsString())
	}
	return out
}

func (e *evaluator) strMap(attr *hcl.Attribute) map[string]string {
	if attr == nil {
		return nil
	}
	v, ok := e.value(attr, cty.Map(cty.String))
	if !ok {
		return nil
	}
	v, _ = v.Unmark()
	out := make(map[string]string, v.LengthInt())
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		if ev.IsNull() {
			continue
		}
		out[k.AsString()] = ev.AsString()
	}
	return out
}

func (e *evaluator) boolean(attr *hcl.Attribute) (bool, bool) {
	if attr == nil {
		return false, false
	}
	v, ok := e.value(attr, cty.Bool)
	if !ok {
		return false, false
	}
	v, _ = v.Unmark()
	return v.True(), true
}

// integer evaluates a whole number within [min, max].
func (e *evaluator) integer(attr *hcl.Attribute, min, max int64) (int, bool) {
	if attr == nil {
		return 0, false
	}
	v, ok := e.value(attr, cty.Number)
	if !ok {
		return 0, false
	}
	v, _ = v.Unmark()
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if acc != big.Exact || !bf.IsInt() {
		e.diags = append(e.diags, errorAt(attr.Expr.Range(), "Not a whole number", "%q must be a whole number, got %s.", attr.Name, bf.Text('g', 10)))
		return 0, false
	}
	if i < min || i > max {
		e.diags = append(e.diags, errorAt(attr.Expr.Range(), "Value out of range", "%q must be between %d and %d, got %d.", attr.Name, min, max, i))
		return 0, false
	}
	return int(i), true
}

// reference resolves an attribute that names another block, written either
// as a reference (image.debian-12) or as a string ("debian-12").
func (e *evaluator) reference(attr *hcl.Attribute, kind string) (string, bool) {
	if attr == nil {
		return "", false
	}
	if tr, diags := hcl.AbsTraversalForExpr(attr.Expr); !diags.HasErrors() && tr.RootName() == kind {
		if len(tr) == 2 {
			if a, ok := tr[1].(hcl.TraverseAttr); ok {
				return a.Name, true
			}
		}
		e.diags = append(e.diags, errorAt(attr.Expr.Range(), "Invalid reference",
			"Refer to a %s by name: %s.NAME.", kind, kind))
		return "", false
	}
	s, _, ok := e.str(attr)
	return s, ok
}

// objectOf builds a cty object from a map, for the evaluation context.
func objectOf(m map[string]cty.Value) cty.Value {
	if len(m) == 0 {
		return cty.EmptyObjectVal
	}
	return cty.ObjectVal(m)
}

// sortedKeys returns the keys of m in order, for deterministic output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func ctyString(s string) cty.Value { return cty.StringVal(s) }

func describeType(v cty.Value) string {
	if v.IsNull() {
		return "null"
	}
	return fmt.Sprintf("%s", v.Type().FriendlyName())
}
