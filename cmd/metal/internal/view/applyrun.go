package view

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
)

// ErrCancelled is returned by ApplyRun.Approve when the operator did not
// answer yes; nothing was changed, and ApplyRun said so.
var ErrCancelled = errors.New("apply cancelled")

// ApplyRun is what `metal apply` shows of a run on this terminal
// (runner.View): the plan, the question, then the progress.
type ApplyRun struct {
	In       io.Reader
	Out, Err io.Writer
	// JSON prints the progress as JSON lines and no plan; Color colors the
	// plan and the progress.
	JSON, Color bool
	// AllowDestroy lets a plan that erases disks through; AutoApprove
	// skips the question; Resume asks about resuming instead.
	AllowDestroy, AutoApprove, Resume bool
	// Saved is the plan saved by `metal plan --out` being applied, read
	// from Path: the operator agreed to it, and the run's plan must be it.
	Saved *plan.Plan
	Path  string

	progress *Apply
}

// Plan checks p, the plan computed for the run, against a saved plan,
// prints it, and refuses destruction that was not allowed. False with a
// nil error: nothing to do.
func (v *ApplyRun) Plan(p *plan.Plan) (bool, error) {
	if v.Saved != nil && p.Digest != v.Saved.Digest {
		why := "machines were applied, failed or removed"
		if d := plan.Stale(v.Saved, p); len(d) > 0 {
			why = strings.Join(d, "; ")
		}
		return false, fmt.Errorf("the saved plan %s is stale: the machines changed since it was made (%s); nothing was changed: run `metal plan --out` again and review it", v.Path, why)
	}
	if !v.JSON {
		Plan(v.Out, p, v.Color)
	}
	if !p.HasChanges() {
		return false, nil
	}
	if d := p.Destructive(); len(d) > 0 && !v.AllowDestroy {
		names := make([]string, len(d))
		for i, c := range d {
			names[i] = c.Machine
		}
		return false, fmt.Errorf("the plan erases the disks of %s (reprovision or deprovision); rerun with --allow-destroy if that is meant, or leave them out with --target", strings.Join(names, ", "))
	}
	return true, nil
}

// Approve asks on the terminal unless --auto-approve or a saved plan says
// the operator already agreed.
func (v *ApplyRun) Approve() error {
	if v.Saved != nil || v.AutoApprove {
		return nil
	}
	what := "apply these changes"
	if v.Resume {
		what = "resume the interrupted apply run"
	}
	ok, err := Confirm(v.In, v.Out, what)
	if err != nil {
		return err
	}
	if !ok {
		fmt.Fprintln(v.Out, "Apply cancelled; nothing was changed.")
		return ErrCancelled
	}
	return nil
}

// Waiting says the run waits for another apply of the site.
func (v *ApplyRun) Waiting() {
	fmt.Fprintln(v.Err, "Another metal apply is changing this site's machines; waiting for it to finish (Ctrl-C gives up).")
}

// Start is runner.View's: the progress view, as Progress.
func (v *ApplyRun) Start() apply.Hook { return v.Progress() }

// Progress starts the progress view.
func (v *ApplyRun) Progress() *Apply {
	v.progress = NewApply(v.Out, v.JSON, IsTerminal(v.Out), v.Color)
	return v.progress
}

// Close ends the progress view, if it started.
func (v *ApplyRun) Close() {
	if v.progress != nil {
		v.progress.Close()
	}
}
