package site

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
)

// errorAt is an error diagnostic pointing at rng.
func errorAt(rng hcl.Range, summary, detailFormat string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(detailFormat, args...),
		Subject:  rng.Ptr(),
	}
}

// warningAt is a warning diagnostic pointing at rng.
func warningAt(rng hcl.Range, summary, detailFormat string, args ...any) *hcl.Diagnostic {
	d := errorAt(rng, summary, detailFormat, args...)
	d.Severity = hcl.DiagWarning
	return d
}

// where renders a range as file:line:col for messages that point elsewhere.
func where(rng hcl.Range) string {
	return fmt.Sprintf("%s:%d,%d", rng.Filename, rng.Start.Line, rng.Start.Column)
}
