package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/internal/serialterm"
)

type consoleFlags struct {
	vars    varFlags
	site    siteFlag
	steal   bool
	timeout time.Duration
}

func newConsoleCmd(a *app) *cobra.Command {
	f := &consoleFlags{}
	cmd := &cobra.Command{
		Use:     "console MACHINE",
		Short:   "Attach to a machine's serial console through its BMC (IPMI Serial-over-LAN; Ctrl-] leaves)",
		Long:    helpText("console"),
		Example: helpText("console.examples"),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConsole(cmd.Context(), a, f, args[0])
		},
	}
	f.site.register(cmd.Flags())
	cmd.Flags().BoolVar(&f.steal, "steal", false, "end another session holding the console first")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "bound on reaching the BMC and starting the session")
	cmd.Flags().StringArrayVar(&f.vars.vars, "var", nil, "set a variable: -var NAME=VALUE (repeatable)")
	cmd.Flags().StringArrayVar(&f.vars.varFiles, "var-file", nil, "read variables from an HCL file (repeatable)")
	return cmd
}

func runConsole(ctx context.Context, a *app, f *consoleFlags, name string) error {
	res, err := f.vars.loadSite(a, f.site.name())
	if err != nil {
		return err
	}
	machines, err := res.Site.WithBMC([]string{name})
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	cfg := apply.BMCConfig(machines[0])
	cfg.Timeout = f.timeout
	c, err := bmc.New(cfg, a.logger())
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	conn, err := c.SerialConsole(ctx, bmc.ConsoleOptions{Steal: f.steal})
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	return serialterm.Session(ctx, a.stdin, a.stdout, a.stderr, name, "The BMC of "+name+" ended the serial-over-LAN session",
		func(ctx context.Context, in io.Reader, out io.Writer) error {
			return serialterm.Attach(ctx, conn, in, out)
		})
}
