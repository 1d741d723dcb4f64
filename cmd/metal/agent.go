package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

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
		Use:     "agent",
		Short:   "Run the install agent (what a netbooted machine runs as /init)",
		Hidden:  true,
		Long:    helpText("agent"),
		Example: helpText("agent.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Getpid() == 1 {
				runInit()
			}
			if !noInit {
				return usageError("metal agent runs as /init of the agent initramfs (metal images build-agent); use --no-init to run it on this system, which it may erase")
			}
			ctx, stop := interruptible(cmd.Context())
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
