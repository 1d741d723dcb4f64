package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/inventory"
)

type machinesFlags struct {
	state  arguments.State
	asJSON bool
}

func newMachinesCmd(a *app) *cobra.Command {
	f := &machinesFlags{}
	cmd := &cobra.Command{
		Use:     "machines",
		Short:   "List the site's machines: address, lifecycle state, power, since when",
		Long:    helpText("machines"),
		Example: helpText("machines.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, _, err := openReader(cmd.Context(), a, &f.state)
			if err != nil {
				return err
			}
			defer r.Close()
			return listMachines(cmd.Context(), a.stdout, r, f.asJSON, view.Width(a.stdout))
		},
	}
	f.state.Register(cmd.PersistentFlags())
	cmd.PersistentFlags().BoolVar(&f.asJSON, "json", false, "print JSON for scripts")
	cmd.AddCommand(&cobra.Command{
		Use:     "show NAME|MAC",
		Short:   "Show one machine: identity, hardware, boot intent, agent, history, recent events",
		Long:    helpText("machines-show"),
		Example: helpText("machines-show.examples"),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, url, err := openReader(cmd.Context(), a, &f.state)
			if err != nil {
				return err
			}
			defer r.Close()
			return showMachine(cmd.Context(), a, r, url, args[0], f.asJSON)
		},
	})
	return cmd
}

func listMachines(ctx context.Context, w io.Writer, r inventory.Reader, asJSON bool, width int) error {
	ms, err := r.Machines(ctx)
	if err != nil {
		return err
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	if asJSON {
		if ms == nil {
			ms = []inventory.Machine{}
		}
		return view.JSON(w, view.MachineList{Machines: ms})
	}
	now := time.Now()
	leased, err := inventory.LeasedIPs(ctx, r, now)
	if err != nil {
		return err
	}
	view.Machines(w, ms, leased, now, width)
	return nil
}

// showEvents is how many of a machine's last events `show` prints.
const showEvents = 20

// showConsoleLines is how many lines of its console log `show` prints.
const showConsoleLines = 15

func showMachine(ctx context.Context, a *app, r inventory.Reader, url, ref string, asJSON bool) error {
	det, err := inventory.ReadDetail(ctx, r, ref, showEvents)
	if err != nil {
		return err
	}
	d := view.NewMachineDetail(det)
	if !det.Removed {
		d.ConsoleTail, err = apiclient.ConsoleLog(ctx, r, url, det.Machine.Name, showConsoleLines)
		if err != nil {
			fmt.Fprintf(a.stderr, "warning: console log of %s: %v\n", det.Machine.Name, err)
		}
	}
	if asJSON {
		return view.JSON(a.stdout, d)
	}
	view.Machine(a.stdout, d, time.Now())
	return nil
}
