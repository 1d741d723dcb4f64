package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/inventory"
)

type eventsFlags struct {
	state   stateFlags
	machine string
	follow  bool
	last    int
	asJSON  bool
}

func newEventsCmd(a *app) *cobra.Command {
	f := &eventsFlags{}
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the event log: each machine's boot timeline, state changes, applies",
		Long: `Events prints the newest events of the site's event log, oldest first: DHCP
discover/offer/ack, TFTP and HTTP fetches (script, kernel, initrd, image),
agent reports, lifecycle and power changes, applies. --follow keeps printing
new events as they are appended, until interrupted.

--machine narrows to one machine, by name or MAC (events logged before the
machine had a name are matched by its MAC). --json prints one JSON object per
line (JSON Lines), so it can be piped while following.

The store is the one the site file's state setting names, or --state.`,
		Example: `  metal events --site site.hcl
  metal events --site site.hcl --machine web-01 --last 100
  metal events --site site.hcl --follow
  metal events --state etcd://10.0.0.5:2379/metal --follow --json | jq -c 'select(.kind=="agent")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.last < 0 {
				return usageError("--last %d: want 0 (all) or more", f.last)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			r, err := openReader(ctx, a, &f.state)
			if err != nil {
				return err
			}
			defer r.Close()
			return runEvents(ctx, a.stdout, r, f)
		},
	}
	f.state.register(cmd, false)
	cmd.Flags().StringVar(&f.machine, "machine", "", "only this machine's events (name or MAC)")
	cmd.Flags().BoolVarP(&f.follow, "follow", "f", false, "keep printing new events until interrupted")
	cmd.Flags().IntVarP(&f.last, "last", "n", 50, "print the last N events first (0: all)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print JSON Lines, one event a line")
	return cmd
}

func runEvents(ctx context.Context, w io.Writer, r inventory.Reader, f *eventsFlags) error {
	q, err := inventory.QueryFor(ctx, r, f.machine)
	if err != nil {
		return err
	}
	if f.last > 0 {
		if q.AfterSeq, err = inventory.TailStart(ctx, r, q, f.last); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(w)
	print := func(e inventory.Event) error {
		if f.asJSON {
			return enc.Encode(e)
		}
		_, err := fmt.Fprintln(w, view.Event(e))
		return err
	}
	if f.follow {
		err := r.Follow(ctx, q, print)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	evs, err := r.Events(ctx, q)
	if err != nil {
		return err
	}
	for _, e := range evs {
		if err := print(e); err != nil {
			return err
		}
	}
	return nil
}
