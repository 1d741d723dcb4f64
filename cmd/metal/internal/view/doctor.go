package view

import (
	"fmt"
	"io"

	"github.com/metal-dev/metal/doctor"
)

var checkMarks = map[doctor.Status]string{doctor.OK: "✓", doctor.Warn: "!", doctor.Fail: "✗", doctor.Skip: "-"}

// Checks prints doctor's checks, one line each, and a summary (on
// stderr when a check failed).
func Checks(stdout, stderr io.Writer, checks []doctor.Check) {
	failed, warned := 0, 0
	for _, c := range checks {
		fmt.Fprintf(stdout, "%s %s: %s\n", checkMarks[c.Status], c.Subject, c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(stdout, "    → %s\n", c.Fix)
		}
		switch c.Status {
		case doctor.Fail:
			failed++
		case doctor.Warn:
			warned++
		}
	}
	switch {
	case failed > 0:
		fmt.Fprintf(stderr, "%d of %d checks failed; fix them before metal serve or metal apply.\n", failed, len(checks))
	case warned > 0:
		fmt.Fprintf(stdout, "All checks passed, %d with warnings.\n", warned)
	default:
		fmt.Fprintln(stdout, "All checks passed.")
	}
}

// DoctorReport is the --json form of `metal doctor`.
type DoctorReport struct {
	OK     bool           `json:"ok"`
	Checks []doctor.Check `json:"checks"`
}
