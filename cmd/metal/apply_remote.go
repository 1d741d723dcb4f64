package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/converge/plan"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/site"
)

// runSubmitted is `metal apply` beside a running `metal serve`: the plan
// is computed here from what the daemon's store holds and confirmed here;
// the run is carried out by the daemon, which serves the netboot the
// machines need, and its progress streams back into the same view an
// in-process apply shows. Ctrl-C drains and abandons the run in the
// daemon as it would in-process; if this process goes away, the daemon
// drains the run (it does not abandon machines mid-install).
func runSubmitted(ctx context.Context, a *app, f *arguments.Apply, sock string, res *site.Result, sitePath string, saved *plan.Plan) error {
	for _, fl := range []struct {
		name string
		set  bool
	}{{"listen", f.Serve.Listen != ""}, {"tftp-addr", f.Serve.TFTPAddr != ":69"}, {"agent-kernel", f.Agent.Kernel != ""}} {
		if fl.set {
			return usageError("--%s is for an apply that runs its own servers, but a metal serve runs for this site (%s) and the apply runs there; drop the flag, or stop metal serve", fl.name, sock)
		}
	}
	fmt.Fprintf(a.stderr, "metal serve is running for this site (%s): the apply runs there.\n", sock)
	abs, err := filepath.Abs(sitePath)
	if err != nil {
		return failed(err)
	}
	req := f.Run(saved)
	req.SiteFile, req.SiteDigest = abs, res.Digest()
	client := apiclient.New(sock)
	// Ctrl-C reaches the daemon's run once it is approved; before, it
	// ends this process as anywhere else.
	v := &submitView{ApplyRun: applyView(a, f, saved, sitePath), approved: func() func() {
		return onInterrupt(a, func() { stopSubmitted(a, client, false) }, func() { stopSubmitted(a, client, true) })
	}}
	defer v.stop()
	result, err := client.Submit(ctx, res.Site, hardwareBMCs(a), req, v)
	v.Close()
	return applyResult(result, err)
}

// submitView is the terminal's view of a submitted run.
type submitView struct {
	*view.ApplyRun
	approved    func() (stop func())
	stopSignals func()
}

func (v *submitView) Approve() error {
	if err := v.ApplyRun.Approve(); err != nil {
		return err
	}
	v.stopSignals = v.approved()
	return nil
}

func (v *submitView) Progress() apiclient.Progress { return v.ApplyRun.Progress() }

func (v *submitView) stop() {
	if v.stopSignals != nil {
		v.stopSignals()
	}
}

// stopSubmitted drains (or abandons) the run submitted to metal serve.
func stopSubmitted(a *app, c *apiclient.Client, abandon bool) {
	if err := c.StopApply(abandon); err != nil {
		fmt.Fprintf(a.stderr, "could not tell metal serve to stop the run: %v\n", err)
	}
}
