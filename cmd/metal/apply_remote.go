package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/metal-dev/metal/inventory"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/daemon"
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
func runSubmitted(ctx context.Context, a *app, f *applyFlags, sock string, res *site.Result, sitePath string, saved *plan.Plan) error {
	for _, fl := range []struct {
		name string
		set  bool
	}{{"listen", f.listen != ""}, {"tftp-addr", f.tftpAddr != ":69"}, {"agent-kernel", f.agent.kernel != ""}} {
		if fl.set {
			return usageError("--%s is for an apply that runs its own servers, but a metal serve runs for this site (%s) and the apply runs there; drop the flag, or stop metal serve", fl.name, sock)
		}
	}
	fmt.Fprintf(a.stderr, "metal serve is running for this site (%s): the apply runs there.\n", sock)
	client := apiclient.New(sock)
	v := f.view(a, saved, sitePath)

	abs, err := filepath.Abs(sitePath)
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	req := daemon.ApplyRequest{
		SiteFile: abs, SiteDigest: res.Digest(), Targets: f.targets, Resume: f.resume,
		AllowDestroy: f.allowDestroy, Wipe: inventory.WipeMethod(f.wipe), StepTimeout: f.stepTimeout, AgentTimeout: f.agentTimeout,
		BootTimeout: f.bootTimeout, ConsoleLog: f.consoleLog,
	}
	if saved != nil {
		req.Targets = saved.Targets
	}
	if !f.resume {
		machines, err := client.Machines(ctx)
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		p, err := plan.Compute(res.Site, apply.ObservedFrom(machines, res.Site)).Only(req.Targets)
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		if ok, err := v.Plan(p); !ok || err != nil {
			return refused(err)
		}
		req.PlanDigest = p.Digest
	}
	if err := v.Approve(); err != nil {
		return refused(err)
	}

	stop := onInterrupt(a, func() { stopSubmitted(a, client, false) }, func() { stopSubmitted(a, client, true) })
	defer stop()

	result, runErr := client.Apply(req, v.Progress())
	v.Close()
	if result == nil && runErr == nil {
		runErr = errors.New("metal serve stopped before the run ended (`metal events` shows how far it got; `metal apply --resume` continues it once metal serve runs again)")
	}
	if result == nil {
		result = &apply.Result{}
	}
	return applyResult(*result, runErr)
}

// stopSubmitted drains (or abandons) the run submitted to metal serve.
func stopSubmitted(a *app, c *apiclient.Client, abandon bool) {
	if err := c.StopApply(abandon); err != nil {
		fmt.Fprintf(a.stderr, "could not tell metal serve to stop the run: %v\n", err)
	}
}
