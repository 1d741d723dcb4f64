package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
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
			r, err := openReader(cmd.Context(), a, &f.state)
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
			r, err := openReader(cmd.Context(), a, &f.state)
			if err != nil {
				return err
			}
			defer r.Close()
			return showMachine(cmd.Context(), a.stdout, r, args[0], f.asJSON, consoleTailOf(a, &f.state, r))
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

// consoleTailOf reads the end of a machine's console log: from the
// running metal serve when r is it, else from the state directory beside
// an embedded store, where serve left it; none for a store elsewhere.
func consoleTailOf(a *app, f *arguments.State, r inventory.Reader) func(ctx context.Context, machine string) []string {
	return func(ctx context.Context, machine string) []string {
		var lines []string
		var err error
		if c, ok := r.(interface {
			ConsoleLog(context.Context, string, int) ([]string, error)
		}); ok {
			lines, err = c.ConsoleLog(ctx, machine, showConsoleLines)
		} else if st, rerr := f.Resolve(a.stderr, false); rerr == nil && strings.HasPrefix(st.State, "file://") {
			lines, err = serial.Tail(daemon.ConsoleLogPath(site.DefaultStateDir(st.State, ""), machine), showConsoleLines)
		}
		if err != nil {
			fmt.Fprintf(a.stderr, "warning: console log of %s: %v\n", machine, err)
		}
		return lines
	}
}

func showMachine(ctx context.Context, w io.Writer, r inventory.Reader, ref string, asJSON bool, tail func(context.Context, string) []string) error {
	det, err := inventory.ReadDetail(ctx, r, ref, showEvents)
	if err != nil {
		return err
	}
	d := view.NewMachineDetail(det)
	if tail != nil && !det.Removed {
		d.ConsoleTail = tail(ctx, det.Machine.Name)
	}
	if asJSON {
		return view.JSON(w, d)
	}
	view.Machine(w, d, time.Now())
	return nil
}
