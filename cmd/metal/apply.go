package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/converge/runner"
	"github.com/metal-dev/metal/daemon"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
)

func newApplyCmd(a *app) *cobra.Command {
	var f arguments.Apply
	cmd := &cobra.Command{
		Use:     "apply [--site FILE] [PLANFILE]",
		Short:   "Make the machines what the site file says, in batches that halt on failure",
		Long:    helpText("apply"),
		Example: helpText("apply.examples"),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runApply(cmd.Context(), a, &f, args)
		},
	}
	f.Register(cmd.Flags())
	return cmd
}

// runApply is the whole verb: load, open the runtime, plan, confirm, apply.
// The argument is a plan saved by metal plan --out, or (deprecated) the
// site file.
func runApply(ctx context.Context, a *app, f *arguments.Apply, args []string) error {
	saved, path, sitePath, err := f.Parse(args)
	if err != nil {
		return err
	}
	res, err := f.Site.Vars.LoadSite(a.stderr, sitePath)
	if err != nil {
		return err
	}
	if saved != nil && res.Digest() != saved.SiteDigest {
		return failed(fmt.Errorf("the saved plan %s is stale: %s changed since it was made; run `metal plan --out` again and review it", path, sitePath))
	}
	// Refuse before touching anything when nobody can confirm.
	if saved == nil && !f.AutoApprove && !view.IsTerminal(a.stdin) {
		return failed(errors.New("apply needs confirmation and there is no terminal to ask on; review `metal plan` and rerun with --auto-approve, or apply a saved plan (metal plan --out FILE, then metal apply FILE)"))
	}

	if err := refuseFenced(res.Site, filepath.Dir(sitePath), f.Serve.StateDir); err != nil {
		return err
	}
	// With a metal serve running for this site, it holds the ports (and an
	// embedded store): the run is handed to it.
	if sock, ok := apiclient.Running(stateDir(res.Site, filepath.Dir(sitePath), f.Serve.StateDir)); ok {
		return runSubmitted(ctx, a, f, sock, res, sitePath, saved)
	}

	log := a.logger()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	drain := make(chan struct{})
	stopSignals := onInterrupt(a, func() { close(drain) }, cancel)
	defer stopSignals()

	// No metal serve: this process serves the netboot for the run.
	opts := f.Serve
	opts.Site, opts.SiteDir, opts.Logger = res.Site, filepath.Dir(sitePath), log
	// An agent given on the command line is used instead of building one.
	opts.Agent.Boot = f.Agent.Boot()
	// The engine itself asks the BMCs of the machines it changes.
	opts.PowerPoll = -1
	d, err := daemon.New(ctx, opts)
	if err != nil {
		return failed(err)
	}
	defer d.Close()
	v := applyView(a, f, saved, path)
	req := f.Run(saved)
	result, err := runner.Run(ctx, runner.Operation{
		Site: res.Site, Store: d.Store, Resume: req.Resume, Targets: req.Targets,
		Hardware: hardwareBMCs(a),
		Engine:   d.EngineFor(req, apply.DriverBMCs(log, nil), drain, log),
		Serve:    d.ServeWhile,
	}, v)
	v.Close()
	return applyResult(result, err)
}

// applyView is how the run shows on this terminal.
func applyView(a *app, f *arguments.Apply, saved *plan.Plan, path string) *view.ApplyRun {
	return &view.ApplyRun{In: a.stdin, Out: a.stdout, Err: a.stderr, JSON: f.JSON,
		Color:        view.Color(a.stdout, f.NoColor),
		AllowDestroy: f.Request.AllowDestroy, AutoApprove: f.AutoApprove, Resume: f.Request.Resume, Saved: saved, Path: path}
}

// applyResult turns how a run ended into the verb's error.
func applyResult(result apply.Result, err error) error {
	if err != nil {
		return refused(err)
	}
	if err := result.Err(); err != nil {
		return failed(err)
	}
	return nil
}

// refused is the verb's error for a run that did not start or ended in
// err (nil: nothing to do); a cancel was already said.
func refused(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, view.ErrCancelled):
		return silentExit(exitFailed)
	}
	return failed(err)
}
