package view

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/pmezard/go-difflib/difflib"
	"golang.org/x/term"

	"github.com/metal-dev/metal/site"
)

// Diags prints diagnostics for people: each with its file, line and
// column, the source line and a caret under the problem.
func Diags(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics) {
	if len(diags) == 0 {
		return
	}
	width, color := uint(100), Color(w, false)
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 20 {
			width = uint(cols)
		}
	}
	dw := hcl.NewDiagnosticTextWriter(w, files, width, color)
	_ = dw.WriteDiagnostics(diags)
}

// JSONDiag is the --json form of a diagnostic.
type JSONDiag struct {
	Severity string     `json:"severity"`
	Summary  string     `json:"summary"`
	Detail   string     `json:"detail,omitempty"`
	Range    *jsonRange `json:"range,omitempty"`
}

type jsonRange struct {
	Filename string  `json:"filename"`
	Start    jsonPos `json:"start"`
	End      jsonPos `json:"end"`
}

type jsonPos struct {
	Line   int `json:"line"`
	Column int `json:"column"`
	Byte   int `json:"byte"`
}

// JSONDiags is the --json form of diags.
func JSONDiags(diags hcl.Diagnostics) []JSONDiag {
	out := make([]JSONDiag, 0, len(diags))
	for _, d := range diags {
		jd := JSONDiag{Severity: "error", Summary: d.Summary, Detail: d.Detail}
		if d.Severity == hcl.DiagWarning {
			jd.Severity = "warning"
		}
		if r := d.Subject; r != nil {
			jd.Range = &jsonRange{
				Filename: r.Filename,
				Start:    jsonPos{r.Start.Line, r.Start.Column, r.Start.Byte},
				End:      jsonPos{r.End.Line, r.End.Column, r.End.Byte},
			}
		}
		out = append(out, jd)
	}
	return out
}

// JSON writes v as indented JSON.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Validated is what `metal validate` says of one file (its --json form).
type Validated struct {
	File         string     `json:"file"`
	Valid        bool       `json:"valid"`
	Machines     int        `json:"machines"`
	ErrorCount   int        `json:"error_count"`
	WarningCount int        `json:"warning_count"`
	Diagnostics  []JSONDiag `json:"diagnostics"`
}

// NewValidated sums up the load of the site file path into res.
func NewValidated(path string, res *site.Result, diags hcl.Diagnostics) Validated {
	v := Validated{File: path, Valid: !diags.HasErrors(), Diagnostics: JSONDiags(diags)}
	if res.Site != nil {
		v.Machines = len(res.Site.Machines)
	}
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			v.ErrorCount++
		} else {
			v.WarningCount++
		}
	}
	return v
}

// Line is the file's verdict for people.
func (v Validated) Line(w io.Writer) {
	if v.Valid {
		fmt.Fprintf(w, "%s: valid (%d machines)\n", v.File, v.Machines)
	} else {
		fmt.Fprintf(w, "%s: %d error(s), %d warning(s)\n", v.File, v.ErrorCount, v.WarningCount)
	}
}

// Diff prints the change from src to out of the file path as a unified
// diff.
func Diff(w io.Writer, path string, src, out []byte) {
	d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(src)), B: difflib.SplitLines(string(out)),
		FromFile: path, ToFile: path + " (formatted)", Context: 3,
	})
	fmt.Fprint(w, d)
}
