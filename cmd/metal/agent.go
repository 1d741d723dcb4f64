package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/images/agent"
)

// runInit is metal as /init of the agent initramfs (PID 1): it never
// returns, since the kernel panics when init exits.
func runInit() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("agent", "metal")
	for {
		agent.Main(context.Background(), agent.Options{Logger: log})
	}
}

func newAgentCmd(a *app) *cobra.Command {
	var noInit bool
	cmd := &cobra.Command{
		Use:    "agent",
		Short:  "Run the install agent (what a netbooted machine runs as /init)",
		Hidden: true,
		Long: `Agent is metal's install agent. A machine net-booted into the initramfs that
'metal images build-agent' makes runs it as /init: it mounts the kernel's
filesystems, loads the NIC and disk drivers, takes a DHCP lease, reports the
machine's hardware to the metal named by metal.url= on the kernel command
line, and carries out its task (discover, install, wipe).

As PID 1 it needs no command: the binary started as /init runs the agent.
Run by hand it refuses, unless --no-init, which skips mounting and module
loading and works on the running system's disks: only for debugging, on a
machine you mean to erase.`,
		Example: `  # what the initramfs does (the kernel starts /init, which is metal):
  #   linux ... metal.url=http://192.0.2.1:8080 console=ttyS0
  # on a rescue system, against a disk you mean to erase:
  metal agent --no-init`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Getpid() == 1 {
				runInit()
			}
			if !noInit {
				return usageError("metal agent runs as /init of the agent initramfs (metal images build-agent); use --no-init to run it on this system, which it may erase")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			agent.Serve(ctx, agent.Options{Logger: a.logger(), Reboot: func() error {
				return errors.New("not rebooting: started with --no-init")
			}})
			return nil
		},
	}
	cmd.Flags().BoolVar(&noInit, "no-init", false, "run on this system without mounting or loading modules (debugging)")
	return cmd
}
