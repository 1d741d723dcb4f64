package site

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
)

// Limits bound what a site file may ask for, so a hostile or mistaken file
// is rejected with a clear message instead of exhausting the machine.
type Limits struct {
	MaxFileBytes int64 // size of the site file and of each -var-file
	MaxMachines  int   // machines after for_each/count expansion
}

// DefaultLimits are generous for real sites (a 10,000-machine colo is a few
// hundred KiB of HCL) and small enough to fail fast on a runaway file.
var DefaultLimits = Limits{MaxFileBytes: 32 << 20, MaxMachines: 100_000}

// Options are the inputs of a load besides the site file itself.
type Options struct {
	// Vars are -var arguments, "name=value", in command-line order.
	Vars []string
	// VarFiles are -var-file paths, applied before Vars.
	VarFiles []string
	// Env is the process environment (os.Environ()); METAL_VAR_<name>
	// entries give variables their values, below files and -var.
	Env    []string
	Limits Limits
}

// Result is what a load produced: the site when it is valid, and the parsed
// files so diagnostics can be printed with their source snippets.
type Result struct {
	Site  *Site
	Files map[string]*hcl.File
}

// LoadFile loads and validates the site file at path. The returned site is
// nil when the diagnostics hold an error.
func LoadFile(path string, opts Options) (*Result, hcl.Diagnostics) {
	limits := opts.Limits
	if limits == (Limits{}) {
		limits = DefaultLimits
	}
	src, diag := readLimited(path, limits.MaxFileBytes)
	if diag != nil {
		return &Result{Files: map[string]*hcl.File{}}, hcl.Diagnostics{diag}
	}
	return Load(path, src, opts)
}

// Reloader loads the site file at path again with opts whenever it is
// called: the site and its Digest, or an error while the file has errors.
// A daemon reloads its site so that an apply submitted for an edited file
// runs what the file says now; name is the file as the operator named it.
func Reloader(path, name string, opts Options) func(context.Context) (*Site, string, error) {
	return func(context.Context) (*Site, string, error) {
		res, diags := LoadFile(path, opts)
		if diags.HasErrors() {
			return nil, "", fmt.Errorf("the site file has errors now (metal validate %s shows them): %s", name, diags.Error())
		}
		return res.Site, res.Digest(), nil
	}
}

// Load loads and validates a site from src, named filename in diagnostics.
func Load(filename string, src []byte, opts Options) (*Result, hcl.Diagnostics) {
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits
	}
	l := &loader{
		parser:  hclparse.NewParser(),
		opts:    opts,
		baseDir: filepath.Dir(filename),
	}
	res := &Result{}
	s, diags := l.load(filename, src)
	res.Files = l.parser.Files()
	if diags.HasErrors() {
		return res, diags
	}
	res.Site = s
	return res, diags
}

func readLimited(path string, max int64) ([]byte, *hcl.Diagnostic) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot read file", Detail: err.Error()}
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot read file", Detail: fmt.Sprintf("%s: %v", path, err)}
	}
	if int64(len(src)) > max {
		return nil, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "File too large",
			Detail: fmt.Sprintf("%s is larger than %d bytes, the limit for a site file; split generated machines with for_each instead of writing each one out.", path, max)}
	}
	return src, nil
}

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "site", LabelNames: []string{"name"}},
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "locals"},
		{Type: "network", LabelNames: []string{"name"}},
		{Type: "image", LabelNames: []string{"name"}},
		{Type: "machine", LabelNames: []string{"name"}},
		{Type: "rollout"},
		{Type: "fence"},
	},
}

// loader holds the state of one load.
type loader struct {
	parser  *hclparse.Parser
	opts    Options
	baseDir string
	ctx     *hcl.EvalContext
}

func (l *loader) load(filename string, src []byte) (*Site, hcl.Diagnostics) {
	file, diags := l.parser.ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, diags
	}
	content, moreDiags := file.Body.Content(rootSchema)
	diags = append(diags, moreDiags...)
	if moreDiags.HasErrors() {
		return nil, diags
	}
	byType := map[string][]*hcl.Block{}
	for _, b := range content.Blocks {
		byType[b.Type] = append(byType[b.Type], b)
	}

	s := &Site{Variables: map[string]*Variable{}}
	l.ctx = &hcl.EvalContext{
		Variables: map[string]cty.Value{},
		Functions: functions(l.baseDir),
	}

	// Variables, then locals: everything else may refer to both.
	varVals, d := l.decodeVariables(byType["variable"], s)
	diags = append(diags, d...)
	l.ctx.Variables["var"] = objectOf(varVals)
	if diags.HasErrors() {
		return nil, diags
	}
	localVals, d := l.decodeLocals(byType["locals"])
	diags = append(diags, d...)
	l.ctx.Variables["local"] = objectOf(localVals)
	if diags.HasErrors() {
		return nil, diags
	}

	diags = append(diags, l.decodeSite(byType["site"], s)...)
	diags = append(diags, l.decodeNetworks(byType["network"], s)...)
	diags = append(diags, l.decodeImages(byType["image"], s)...)
	diags = append(diags, l.decodeRollout(byType["rollout"], s)...)
	diags = append(diags, l.decodeFence(byType["fence"], s)...)
	// Machines may refer to networks and images (network.rack1.subnet).
	l.ctx.Variables["network"] = networkObjects(s.Networks)
	l.ctx.Variables["image"] = imageObjects(s.Images)
	diags = append(diags, l.decodeMachines(byType["machine"], s)...)
	// Validation runs even after decoding errors, so that one run reports
	// every problem; it skips values that failed to decode.
	diags = append(diags, validate(s)...)
	if diags.HasErrors() {
		return nil, diags
	}
	return s, diags
}

func networkObjects(nets []*Network) cty.Value {
	m := map[string]cty.Value{}
	for _, n := range nets {
		attrs := map[string]cty.Value{
			"name":      ctyString(n.Name),
			"interface": ctyString(n.Interface),
			"subnet":    ctyString(""),
			"gateway":   ctyString(""),
		}
		if n.Subnet.IsValid() {
			attrs["subnet"] = ctyString(n.Subnet.String())
		}
		if n.Gateway.IsValid() {
			attrs["gateway"] = ctyString(n.Gateway.String())
		}
		m[n.Name] = cty.ObjectVal(attrs)
	}
	return objectOf(m)
}

func imageObjects(images []*Image) cty.Value {
	m := map[string]cty.Value{}
	for _, im := range images {
		m[im.Name] = cty.ObjectVal(map[string]cty.Value{"name": ctyString(im.Name)})
	}
	return objectOf(m)
}
