package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/inventory"
)

type eventsFlags struct {
	state   arguments.State
	machine string
	follow  bool
	last    int
	asJSON  bool
}

func newEventsCmd(a *app) *cobra.Command {
	f := &eventsFlags{}
	cmd := &cobra.Command{
		Use:     "events",
		Short:   "Show the event log: each machine's boot timeline, state changes, applies",
		Long:    helpText("events"),
		Example: helpText("events.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.last < 0 {
				return usageError("--last %d: want 0 (all) or more", f.last)
			}
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			r, _, err := openReader(ctx, a, &f.state)
			if err != nil {
				return err
			}
			defer r.Close()
			return runEvents(ctx, a.stdout, r, f)
		},
	}
	f.state.Register(cmd.Flags())
	cmd.Flags().StringVar(&f.machine, "machine", "", "only this machine's events (name or MAC)")
	cmd.Flags().BoolVarP(&f.follow, "follow", "f", false, "keep printing new events until interrupted")
	cmd.Flags().IntVarP(&f.last, "last", "n", 50, "print the last N events first (0: all)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print JSON Lines, one event a line")
	return cmd
}

func runEvents(ctx context.Context, w io.Writer, r inventory.Reader, f *eventsFlags) error {
	enc := json.NewEncoder(w)
	return inventory.Tail(ctx, r, f.machine, f.last, f.follow, func(e inventory.Event) error {
		if f.asJSON {
			return enc.Encode(e)
		}
		_, err := fmt.Fprintln(w, view.Event(e))
		return err
	})
}
