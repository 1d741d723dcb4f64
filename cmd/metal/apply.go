package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/converge/runner"
	"github.com/metal-dev/metal/daemon"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
)

// applyFlags parse into the run's request (req), as metal serve takes it
// too, and say how this process shows it and serves without metal serve.
type applyFlags struct {
	vars        arguments.Vars
	site        arguments.Site
	req         daemon.ApplyRequest
	autoApprove bool
	asJSON      bool
	noColor     bool
	// serve are the servers' options when no metal serve runs.
	serve daemon.Options
	agent arguments.AgentBoot
}

func newApplyCmd(a *app) *cobra.Command {
	var f applyFlags
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
	f.vars.Register(cmd.Flags())
	f.site.Register(cmd.Flags())
	fl := cmd.Flags()
	fl.BoolVar(&f.autoApprove, "auto-approve", false, "apply without asking for confirmation")
	fl.BoolVar(&f.req.AllowDestroy, "allow-destroy", false, "carry out reprovisions (the new image overwrites the disk), deprovisions (the disks are wiped as --wipe says), and firmware downgrades")
	fl.StringVar((*string)(&f.req.Wipe), "wipe", "", `how a deprovision erases each disk, for this run (default: the machine's wipe in the site file while it was declared, else quick): "quick" zeroes the first and last MiB (partition tables, filesystem and RAID labels; the data stays readable); "discard" tells the device every block is unused (BLKDISCARD: fast on SSDs, but the device decides what reads return) and overwrites when old data still reads back; "zero" overwrites every byte; "secure" asks the drive to erase itself (NVMe Sanitize, else Format NVM with secure erase; ATA SECURITY ERASE UNIT unless the drive is frozen or locked; else BLKSECDISCARD) and overwrites when it cannot, saying why; all but quick then read back samples across the whole disk: no sampled sector may still hold its old content`)
	fl.BoolVar(&f.req.Resume, "resume", false, "continue the last interrupted apply run instead of starting a new one")
	fl.BoolVar(&f.asJSON, "json", false, "print progress as JSON lines (one object per event) instead of text")
	fl.BoolVar(&f.noColor, "no-color", false, "never color the output")
	fl.StringArrayVar(&f.req.Targets, "target", nil, "apply only to this machine (repeatable)")
	arguments.Servers(fl, &f.serve)
	f.agent.Register(cmd.Flags())
	fl.DurationVar(&f.req.StepTimeout, "step-timeout", 2*time.Minute, "bound on one try of one BMC step of one machine")
	fl.DurationVar(&f.req.AgentTimeout, "agent-timeout", 30*time.Minute, "bound on the wait for a machine's install agent (image write) or diskless boot")
	fl.DurationVar(&f.req.BootTimeout, "boot-timeout", 3*time.Minute, "bound on the wait, after power-on and after the install agent's reboot, for a machine's first DHCP request or fetch; a machine silent that long fails, naming what was last seen of it (negative: no bound)")
	fl.StringVar(&f.req.ConsoleLog, "console-log", "", "where machines' console logs are, with {machine} for the name, for the report of a machine that does not boot (metal lab apply sets it)")
	return cmd
}

// runApply is the whole verb: load, open the runtime, plan, confirm, apply.
// The argument is a plan saved by metal plan --out, or (deprecated) the
// site file.
func runApply(ctx context.Context, a *app, f *applyFlags, args []string) error {
	if !f.req.Wipe.Valid() {
		return usageError("--wipe %q: use quick, discard, zero or secure", f.req.Wipe)
	}
	var saved *plan.Plan
	if len(args) > 0 {
		var err error
		if saved, err = plan.ReadSaved(args[0]); err != nil {
			return failed(err)
		}
	}
	var path, sitePath string
	if saved != nil {
		if f.req.Resume || len(f.req.Targets) > 0 {
			return usageError("a saved plan is applied as saved: --resume and --target go with a site file")
		}
		if f.site.Path != "" {
			return usageError("a saved plan names its site file (%s): drop --site", saved.SiteFile)
		}
		path, sitePath = args[0], saved.SiteFile
	} else {
		var err error
		if sitePath, err = f.site.File(args); err != nil {
			return err
		}
		path = sitePath
	}
	res, err := f.vars.LoadSite(a.stderr, sitePath)
	if err != nil {
		return err
	}
	if saved != nil && res.Digest() != saved.SiteDigest {
		return failed(fmt.Errorf("the saved plan %s is stale: %s changed since it was made; run `metal plan --out` again and review it", path, sitePath))
	}
	// Refuse before touching anything when nobody can confirm.
	if saved == nil && !f.autoApprove && !view.IsTerminal(a.stdin) {
		return failed(errors.New("apply needs confirmation and there is no terminal to ask on; review `metal plan` and rerun with --auto-approve, or apply a saved plan (metal plan --out FILE, then metal apply FILE)"))
	}

	if err := refuseFenced(res.Site, filepath.Dir(sitePath), f.serve.StateDir); err != nil {
		return err
	}
	// With a metal serve running for this site, it holds the ports (and an
	// embedded store): the run is handed to it.
	if sock, ok := apiclient.Running(stateDir(res.Site, filepath.Dir(sitePath), f.serve.StateDir)); ok {
		return runSubmitted(ctx, a, f, sock, res, sitePath, saved)
	}

	log := a.logger()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	drain := make(chan struct{})
	stopSignals := onInterrupt(a, func() { close(drain) }, cancel)
	defer stopSignals()

	// No metal serve: this process serves the netboot for the run.
	opts := f.serve
	opts.Site, opts.SiteDir, opts.Logger = res.Site, filepath.Dir(sitePath), log
	// An agent given on the command line is used instead of building one.
	opts.Agent.Boot = f.agent.Boot()
	// The engine itself asks the BMCs of the machines it changes.
	opts.PowerPoll = -1
	d, err := daemon.New(ctx, opts)
	if err != nil {
		return failed(err)
	}
	defer d.Close()
	v := f.view(a, saved, path)
	req := f.request(saved)
	result, err := runner.Run(ctx, runner.Operation{
		Site: res.Site, Store: d.Store, Resume: req.Resume, Targets: req.Targets,
		Hardware: hardwareBMCs(a),
		Engine:   d.EngineFor(req, apply.DriverBMCs(log, nil), drain, log),
		Serve:    d.ServeWhile,
	}, v)
	v.Close()
	return applyResult(result, err)
}

// request is the run the flags ask for, in-process or submitted to metal
// serve alike; a saved plan names its targets.
func (f *applyFlags) request(saved *plan.Plan) daemon.ApplyRequest {
	req := f.req
	if saved != nil {
		req.Targets = saved.Targets
	}
	return req
}

// view is how the run shows on this terminal.
func (f *applyFlags) view(a *app, saved *plan.Plan, path string) *view.ApplyRun {
	return &view.ApplyRun{In: a.stdin, Out: a.stdout, Err: a.stderr, JSON: f.asJSON,
		Color:        !f.noColor && view.IsTerminal(a.stdout) && os.Getenv("NO_COLOR") == "",
		AllowDestroy: f.req.AllowDestroy, AutoApprove: f.autoApprove, Resume: f.req.Resume, Saved: saved, Path: path}
}

// onInterrupt calls drain on the first Ctrl-C (or SIGTERM) and abandon on
// the second; the returned func stops listening.
func onInterrupt(a *app, drain, abandon func()) (stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		n := 0
		for range sigs {
			n++
			if n == 1 {
				drain()
				fmt.Fprintln(a.stderr, "\nStopping: no more machines start; those in flight finish. Ctrl-C again abandons them (metal apply --resume continues).")
				continue
			}
			abandon()
			return
		}
	}()
	return func() { signal.Stop(sigs) }
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
