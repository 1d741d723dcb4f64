package main

import (
	"context"
	"io"
	"sort"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/inventory"
)

type machinesFlags struct {
	state  stateFlags
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
			r, err := openReader(cmd.Context(), a, &f.state)
			if err != nil {
				return err
			}
			defer r.Close()
			return listMachines(cmd.Context(), a.stdout, r, f.asJSON, view.Width(a.stdout))
		},
	}
	f.state.register(cmd, true)
	cmd.PersistentFlags().BoolVar(&f.asJSON, "json", false, "print JSON for scripts")
	cmd.AddCommand(&cobra.Command{
		Use:     "show NAME|MAC",
		Short:   "Show one machine: identity, hardware, boot intent, agent, history, recent events",
		Long:    helpText("machines-show"),
		Example: helpText("machines-show.examples"),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := openReader(cmd.Context(), a, &f.state)
			if err != nil {
				return err
			}
			defer r.Close()
			return showMachine(cmd.Context(), a.stdout, r, args[0], f.asJSON)
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

func showMachine(ctx context.Context, w io.Writer, r inventory.Reader, ref string, asJSON bool) error {
	det, err := inventory.ReadDetail(ctx, r, ref, showEvents)
	if err != nil {
		return err
	}
	if asJSON {
		return view.JSON(w, view.NewMachineDetail(det))
	}
	view.Machine(w, view.NewMachineDetail(det), time.Now())
	return nil
}
