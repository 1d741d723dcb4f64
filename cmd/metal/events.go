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

func runEvents(ctx context.Context, w io.Writer, r inventoryReader, f *eventsFlags) error {
	q, err := eventQuery(ctx, r, f.machine)
	if err != nil {
		return err
	}
	if f.last > 0 {
		if q.AfterSeq, err = tailStart(ctx, r, q, f.last); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(w)
	print := func(e inventory.Event) error {
		if f.asJSON {
			return enc.Encode(e)
		}
		_, err := fmt.Fprintln(w, eventLine(e))
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

// eventQuery turns --machine into a query: a machine in the store is
// matched by name and MAC; an unknown MAC by MAC alone.
func eventQuery(ctx context.Context, r inventoryReader, ref string) (inventory.EventQuery, error) {
	if ref == "" {
		return inventory.EventQuery{}, nil
	}
	m, err := r.Machine(ctx, ref)
	if err == nil {
		return inventory.EventQuery{Machine: m.Name, MAC: m.MAC}, nil
	}
	if !errors.Is(err, inventory.ErrNotFound) {
		return inventory.EventQuery{}, err
	}
	if mac, merr := inventory.NormalizeMAC(ref); merr == nil {
		return inventory.EventQuery{MAC: mac}, nil
	}
	return inventory.EventQuery{}, fmt.Errorf("--machine %q: no machine of that name in the store, and not a MAC: `metal machines` lists them", ref)
}

// tailStart returns the AfterSeq from which q yields its last n events.
// The whole log is gap-free, so it is the last Seq minus n, and the last
// Seq is found with a few one-event reads (a doubling search, then halving)
// rather than by reading the log. A filtered query reads its matches,
// which are one machine's: few.
func tailStart(ctx context.Context, r inventoryReader, q inventory.EventQuery, n int) (int64, error) {
	if q.Machine != "" || q.MAC != "" {
		evs, err := r.Events(ctx, q)
		if err != nil || len(evs) <= n {
			return 0, err
		}
		return evs[len(evs)-n-1].Seq, nil
	}
	after := func(seq int64) (bool, error) {
		evs, err := r.Events(ctx, inventory.EventQuery{AfterSeq: seq, Limit: 1})
		return len(evs) > 0, err
	}
	// Invariant: some event is after lo, none after hi.
	lo, hi := int64(0), int64(1)
	for {
		ok, err := after(hi)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		lo, hi = hi, hi*2
	}
	if ok, err := after(lo); err != nil || !ok {
		return 0, err // empty log
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := after(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	// hi is the last Seq.
	return max(0, hi-int64(n)), nil
}

// eventLine is one event for people: local time, kind, machine, message.
func eventLine(e inventory.Event) string {
	who := e.Machine
	if who == "" {
		who = e.MAC
	}
	if who == "" {
		who = "-"
	}
	return fmt.Sprintf("%s  %-13s %-20s %s", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Kind, who, e.Message)
}
