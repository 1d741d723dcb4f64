package site

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
)

// EnvPrefix is the prefix of environment variables that set site variables:
// METAL_VAR_bmc_password sets var.bmc_password.
const EnvPrefix = "METAL_VAR_"

var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "type"}, {Name: "default"}, {Name: "sensitive"}, {Name: "description"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "validation"}},
}

var validationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "condition", Required: true}, {Name: "error_message", Required: true},
	},
}

// variableDecl is a variable block before its value is known.
type variableDecl struct {
	v           *Variable
	typ         cty.Type
	def         cty.Value // cty.NilVal when there is no default
	validations []*hcl.Block
}

// decodeVariables reads the variable blocks and values them from, in rising
// precedence: default, METAL_VAR_ environment, -var-file, -var.
func (l *loader) decodeVariables(blocks []*hcl.Block, s *Site) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	decls := map[string]*variableDecl{}
	for _, b := range blocks {
		name := b.Labels[0]
		if prev, ok := decls[name]; ok {
			diags = append(diags, errorAt(b.LabelRanges[0], "Duplicate variable",
				"Variable %q was already declared at %s.", name, where(prev.v.DeclRange)))
			continue
		}
		if !hclsyntax.ValidIdentifier(name) {
			diags = append(diags, errorAt(b.LabelRanges[0], "Invalid variable name",
				"%q is not a valid name: use letters, digits, underscores and dashes, starting with a letter.", name))
			continue
		}
		d, moreDiags := decodeVariableDecl(b)
		diags = append(diags, moreDiags...)
		if d != nil {
			decls[name] = d
			s.Variables[name] = d.v
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}

	given := map[string]givenValue{}
	for _, kv := range l.opts.Env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		name = strings.TrimPrefix(name, EnvPrefix)
		if _, declared := decls[name]; declared {
			given[name] = givenValue{raw: val, from: "environment variable " + EnvPrefix + name}
		}
	}
	for _, path := range l.opts.VarFiles {
		diags = append(diags, l.readVarFile(path, decls, given)...)
	}
	for _, arg := range l.opts.Vars {
		name, val, ok := strings.Cut(arg, "=")
		if !ok || name == "" {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid -var option",
				Detail: fmt.Sprintf("The -var option %q is not of the form NAME=VALUE.", arg)})
			continue
		}
		if _, declared := decls[name]; !declared {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Value for undeclared variable",
				Detail: fmt.Sprintf("-var sets %q, but the site declares no variable of that name. Declare it with a variable %q block.", name, name)})
			continue
		}
		given[name] = givenValue{raw: val, from: "-var " + name}
	}

	vals := map[string]cty.Value{}
	for _, name := range sortedKeys(decls) {
		d := decls[name]
		v, moreDiags := d.resolve(given[name])
		diags = append(diags, moreDiags...)
		if moreDiags.HasErrors() {
			continue
		}
		if d.v.Sensitive {
			v = v.Mark(markSensitive)
		}
		vals[name] = v
	}
	if diags.HasErrors() {
		return nil, diags
	}
	// Validation conditions see only their own variable.
	for _, name := range sortedKeys(decls) {
		diags = append(diags, decls[name].check(vals[name], l.ctx.Functions)...)
	}
	return vals, diags
}

// givenValue is a variable's value from outside the file: either a raw
// string (command line, environment) or an expression (a -var-file).
type givenValue struct {
	raw  string
	expr hcl.Expression
	from string
}

func decodeVariableDecl(b *hcl.Block) (*variableDecl, hcl.Diagnostics) {
	content, diags := b.Body.Content(variableSchema)
	d := &variableDecl{v: &Variable{Name: b.Labels[0], DeclRange: b.DefRange}, typ: cty.DynamicPseudoType}
	if a, ok := content.Attributes["type"]; ok {
		t, moreDiags := typeexpr.TypeConstraint(a.Expr)
		diags = append(diags, moreDiags...)
		if !moreDiags.HasErrors() {
			d.typ = t
		}
	}
	e := &evaluator{ctx: nil}
	if a, ok := content.Attributes["description"]; ok {
		d.v.Description, _, _ = e.str(a)
	}
	if a, ok := content.Attributes["sensitive"]; ok {
		d.v.Sensitive, _ = e.boolean(a)
	}
	if a, ok := content.Attributes["default"]; ok {
		if v, ok := e.value(a, d.typ); ok {
			d.def = v
		}
	}
	diags = append(diags, e.diags...)
	for _, vb := range content.Blocks {
		_, moreDiags := vb.Body.Content(validationSchema)
		diags = append(diags, moreDiags...)
		d.validations = append(d.validations, vb)
	}
	return d, diags
}

// resolve turns what was given for the variable (or its default) into a
// value of its type.
func (d *variableDecl) resolve(g givenValue) (cty.Value, hcl.Diagnostics) {
	switch {
	case g.expr != nil:
		v, diags := g.expr.Value(nil)
		if diags.HasErrors() {
			return cty.NilVal, diags
		}
		cv, err := convert.Convert(v, d.typ)
		if err != nil {
			return cty.NilVal, hcl.Diagnostics{errorAt(g.expr.Range(), "Invalid value for variable",
				"The value given for variable %q is not a %s: %s.", d.v.Name, d.typ.FriendlyName(), err)}
		}
		return cv, nil
	case g.from != "":
		return d.parseRaw(g)
	case d.def != cty.NilVal:
		return d.def, nil
	}
	hint := fmt.Sprintf("Pass it with -var %s=VALUE or the environment variable %s%s", d.v.Name, EnvPrefix, d.v.Name)
	if d.v.Sensitive {
		hint = fmt.Sprintf("It is sensitive: set the environment variable %s%s (or use -var-file) rather than typing it on the command line", EnvPrefix, d.v.Name)
	}
	return cty.NilVal, hcl.Diagnostics{errorAt(d.v.DeclRange, "No value for required variable",
		"Variable %q has no default and no value was given. %s.", d.v.Name, hint)}
}

// parseRaw values a variable from a string. Primitive types take the string
// as it is; collections and objects are parsed as HCL expressions, as
// Terraform does for -var.
func (d *variableDecl) parseRaw(g givenValue) (cty.Value, hcl.Diagnostics) {
	var v cty.Value = cty.StringVal(g.raw)
	if !d.typ.IsPrimitiveType() && d.typ != cty.DynamicPseudoType {
		expr, diags := hclsyntax.ParseExpression([]byte(g.raw), g.from, hcl.InitialPos)
		if diags.HasErrors() {
			return cty.NilVal, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid value for variable",
				Detail: fmt.Sprintf("%s: the value for %q must be an HCL expression of type %s.", g.from, d.v.Name, d.typ.FriendlyName())}}
		}
		var moreDiags hcl.Diagnostics
		if v, moreDiags = expr.Value(nil); moreDiags.HasErrors() {
			return cty.NilVal, moreDiags
		}
	}
	cv, err := convert.Convert(v, d.typ)
	if err != nil {
		detail := fmt.Sprintf("%s: the value for %q is not a %s: %s.", g.from, d.v.Name, d.typ.FriendlyName(), err)
		if d.v.Sensitive {
			detail = fmt.Sprintf("%s: the value for %q is not a %s.", g.from, d.v.Name, d.typ.FriendlyName())
		}
		return cty.NilVal, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid value for variable", Detail: detail}}
	}
	return cv, nil
}

// check runs the variable's validation blocks against its value.
func (d *variableDecl) check(v cty.Value, funcs map[string]function.Function) hcl.Diagnostics {
	var diags hcl.Diagnostics
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{d.v.Name: v})},
		Functions: funcs,
	}
	for _, vb := range d.validations {
		content, _ := vb.Body.Content(validationSchema)
		cond, msg := content.Attributes["condition"], content.Attributes["error_message"]
		if cond == nil || msg == nil {
			continue
		}
		// A variable's validation reads its own value, sensitive or not.
		e := &evaluator{ctx: ctx, secretOK: true}
		ok, valid := e.boolean(cond)
		diags = append(diags, e.diags...)
		if !valid || ok {
			continue
		}
		text, _, _ := (&evaluator{ctx: ctx, secretOK: true}).str(msg)
		diags = append(diags, errorAt(cond.Expr.Range(), "Invalid value for variable",
			"%s (variable %q, declared at %s)", text, d.v.Name, where(d.v.DeclRange)))
	}
	return diags
}

// readVarFile reads NAME = VALUE assignments from an HCL file.
func (l *loader) readVarFile(path string, decls map[string]*variableDecl, given map[string]givenValue) hcl.Diagnostics {
	src, diag := readLimited(path, l.opts.Limits.MaxFileBytes)
	if diag != nil {
		return hcl.Diagnostics{diag}
	}
	f, diags := l.parser.ParseHCL(src, path)
	if diags.HasErrors() {
		return diags
	}
	attrs, moreDiags := f.Body.JustAttributes()
	diags = append(diags, moreDiags...)
	for name, a := range attrs {
		if _, declared := decls[name]; !declared {
			diags = append(diags, warningAt(a.NameRange, "Value for undeclared variable",
				"The site declares no variable %q; this value is ignored.", name))
			continue
		}
		given[name] = givenValue{expr: a.Expr, from: path}
	}
	return diags
}
