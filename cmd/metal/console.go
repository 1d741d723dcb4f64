package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/converge/apply"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/internal/serialterm"
	"github.com/metal-dev/metal/site"
)

type consoleFlags struct {
	site    arguments.Site
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
	f.site.Register(cmd.Flags())
	cmd.Flags().BoolVar(&f.steal, "steal", false, "end another session holding the console first")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "bound on reaching the BMC and starting the session")
	return cmd
}

func runConsole(ctx context.Context, a *app, f *consoleFlags, name string) error {
	res, err := f.site.Vars.LoadSite(a.stderr, f.site.Name())
	if err != nil {
		return err
	}
	machines, err := res.Site.WithBMC([]string{name})
	if err != nil {
		return failed(err)
	}
	ctx, stop := interruptible(ctx)
	defer stop()
	// A running metal serve holds the machine's console (a BMC allows one
	// SOL session): join its stream rather than fight it for the session.
	if sock, ok := apiclient.Running(site.DefaultStateDir(res.Site.Settings.State, filepath.Dir(f.site.Name()))); ok && !f.steal {
		conn, err := apiclient.New(sock).Console(ctx, name)
		if err != nil {
			return failed(err)
		}
		fmt.Fprintf(a.stderr, "Console of %s through metal serve's console hub (it logs what the machine prints; browser terminals see the same).\r\n", name)
		return serialterm.Session(ctx, a.stdin, a.stdout, a.stderr, name, name+"'s console ended (the BMC dropped it, or metal serve stopped)",
			func(ctx context.Context, in io.Reader, out io.Writer) error {
				return serialterm.Attach(ctx, conn, in, out)
			})
	}
	cfg := apply.BMCConfig(machines[0])
	cfg.Timeout = f.timeout
	c, err := bmc.New(cfg, a.logger())
	if err != nil {
		return failed(err)
	}
	conn, err := c.SerialConsole(ctx, bmc.ConsoleOptions{Steal: f.steal})
	if err != nil {
		return failed(err)
	}
	if f.steal {
		fmt.Fprintf(a.stderr, "Serial-over-LAN of %s opened directly, taken from any other session (a running metal serve opens it again once this one ends).\r\n", name)
	} else {
		fmt.Fprintf(a.stderr, "No metal serve runs for this site: serial-over-LAN of %s opened directly (nothing logs this session).\r\n", name)
	}
	return serialterm.Session(ctx, a.stdin, a.stdout, a.stderr, name, "The BMC of "+name+" ended the serial-over-LAN session",
		func(ctx context.Context, in io.Reader, out io.Writer) error {
			return serialterm.Attach(ctx, conn, in, out)
		})
}
