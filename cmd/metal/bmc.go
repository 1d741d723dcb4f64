package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
)

type bmcFlags struct {
	site   arguments.Site
	asJSON bool
	fleet  bmc.FleetOptions
}

func newBMCCmd(a *app) *cobra.Command {
	f := &bmcFlags{}
	cmd := &cobra.Command{
		Use:     "bmc",
		Short:   "Power and boot machines through their BMCs (Redfish, IPMI)",
		Long:    helpText("bmc"),
		Example: helpText("bmc.examples"),
	}
	f.site.Register(cmd.PersistentFlags())
	cmd.PersistentFlags().BoolVar(&f.asJSON, "json", false, "print results as JSON for scripts")
	cmd.PersistentFlags().IntVar(&f.fleet.Concurrency, "concurrency", 16, "machines worked on at once")
	cmd.PersistentFlags().DurationVar(&f.fleet.MachineTimeout, "timeout", 2*time.Minute, "bound on the whole operation for one machine")

	power := func(use, short string, action bmc.PowerAction) *cobra.Command {
		var soft bool
		c := &cobra.Command{
			Use: use + " [MACHINE...]", Short: short,
			RunE: func(cmd *cobra.Command, names []string) error {
				act := action
				if soft && action == bmc.ActionOff {
					act = bmc.ActionSoft
				}
				return runBMC(cmd.Context(), a, f, names, bmc.OpPower(act), true)
			},
		}
		if action == bmc.ActionOff {
			c.Flags().BoolVar(&soft, "soft", false, "ask the OS to shut down (ACPI) instead of cutting power")
		}
		return c
	}
	cmd.AddCommand(
		&cobra.Command{
			Use: "status [MACHINE...]", Short: "Show each machine's power state",
			RunE: func(cmd *cobra.Command, names []string) error {
				return runBMC(cmd.Context(), a, f, names, bmc.OpStatus, false)
			},
		},
		power("on", "Power machines on (and wait until they are)", bmc.ActionOn),
		power("off", "Power machines off (and wait until they are)", bmc.ActionOff),
		power("cycle", "Power-cycle machines", bmc.ActionCycle),
		&cobra.Command{
			Use: "inventory [MACHINE...]", Short: "Show what each BMC reports: maker, model, serial, BIOS, NICs",
			RunE: func(cmd *cobra.Command, names []string) error {
				return runBMC(cmd.Context(), a, f, names, bmc.OpInventory, false)
			},
		},
		newBootdevCmd(a, f),
	)
	return cmd
}

func newBootdevCmd(a *app, f *bmcFlags) *cobra.Command {
	var opts bmc.BootOptions
	c := &cobra.Command{
		Use:   "bootdev pxe|disk|cdrom|bios [MACHINE...]",
		Short: "Set the device machines boot from next",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev := bmc.BootDevice(args[0])
			switch dev {
			case bmc.BootPXE, bmc.BootDisk, bmc.BootCDROM, bmc.BootBIOS:
			default:
				return usageError("boot device %q: use pxe, disk, cdrom or bios", args[0])
			}
			return runBMC(cmd.Context(), a, f, args[1:], bmc.OpBootDevice(dev, opts), true)
		},
	}
	c.Flags().BoolVar(&opts.Persistent, "persistent", false, "keep the device for every boot, not only the next")
	c.Flags().BoolVar(&opts.UEFI, "uefi", false, "boot in UEFI mode")
	return c
}

// runBMC loads the site, builds a driver per selected machine, runs op on
// all of them and reports each result. An op that changes machines is
// refused on an instance marked fenced.
func runBMC(ctx context.Context, a *app, f *bmcFlags, names []string, op bmc.Op, changes bool) error {
	res, err := f.site.Vars.LoadSite(a.stderr, f.site.Name())
	if err != nil {
		return err
	}
	if changes {
		if err := refuseFenced(res.Site, filepath.Dir(f.site.Name()), ""); err != nil {
			return err
		}
	}
	machines, err := res.Site.WithBMC(names)
	if err != nil {
		return failed(err)
	}
	targets, err := apply.FleetTargets(machines, a.logger())
	if err != nil {
		return failed(err)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	results := bmc.RunFleet(ctx, targets, f.fleet, op)
	if f.asJSON {
		if err := view.JSON(a.stdout, results); err != nil {
			return err
		}
	} else {
		view.BMCResults(a.stdout, a.stderr, results)
	}
	if bmc.Failed(results) {
		return silentExit(exitFailed)
	}
	return nil
}
