// Package arguments holds the flags several verbs of metal share (the site
// file and its variables, the state store, the SFTP backup directory, the
// agent to boot) and their checks, so that a verb's file declares only the
// flags that are its own, and a flag shared by verbs is named, defaulted
// and explained the same way in each. Terraform keeps its command line
// apart the same way (internal/command/arguments).
package arguments

import "fmt"

// Exit codes, documented in `metal --help`.
const (
	ExitOK      = 0 // success
	ExitFailed  = 1 // invalid input or a failed operation
	ExitUsage   = 2 // the command line itself is wrong
	ExitChanges = 2 // plan --detailed-exitcode: changes present
)

// ExitError carries a specific exit code out of a verb; with no Err, the
// verb already told the user what went wrong.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Silent ends the command with code without printing anything more.
func Silent(code int) error { return &ExitError{Code: code} }

// Failed is err as a failed operation (exit 1).
func Failed(err error) error { return &ExitError{Code: ExitFailed, Err: err} }

// Usage marks an error in how the command was called (exit 2).
func Usage(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}
