package main

import (
	"context"
	"fmt"
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
		Use:   "show NAME|MAC",
		Short: "Show one machine: identity, hardware, boot intent, agent, history, recent events",
		Long:  helpText("machines-show"),
		Example: `  metal machines show --site site.hcl web-01
  metal machines show --site site.hcl 52:54:00:00:01:01 --json`,
		Args: cobra.ExactArgs(1),
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

// machineList is the --json form of `metal machines`, the same shape as
// the daemon API's GET /api/v1/machines.
type machineList struct {
	Machines []inventory.Machine `json:"machines"`
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
		return view.JSON(w, machineList{Machines: ms})
	}
	now := time.Now()
	leased, err := inventory.LeasedIPs(ctx, r, now)
	if err != nil {
		return err
	}
	view.Machines(w, ms, leased, now, width)
	if len(ms) == 0 {
		fmt.Fprintln(w, "No machines in the store yet: `metal serve` records the site's machines, and the discovery agent reports unknown ones.")
	}
	return nil
}

// showEvents is how many of a machine's last events `show` prints.
const showEvents = 20

func showMachine(ctx context.Context, w io.Writer, r inventory.Reader, ref string, asJSON bool) error {
	det, err := inventory.ReadDetail(ctx, r, ref, showEvents)
	if err != nil {
		return err
	}
	d := view.MachineDetail{Machine: det.Machine, Removed: det.Removed, Lease: det.Lease, Erasures: det.Erasures, Events: det.Events}
	m := det.Machine
	if m.State == inventory.StateDiscovered {
		d.Adopt = view.AdoptHCL(m, d.Lease)
	}
	if asJSON {
		return view.JSON(w, d)
	}
	view.Machine(w, d, time.Now())
	return nil
}
