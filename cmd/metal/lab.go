package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/lab"
)

type labFlags struct {
	dir    string
	asJSON bool
}

func newLabCmd(a *app) *cobra.Command {
	f := &labFlags{}
	cmd := &cobra.Command{
		Use:     "lab",
		Short:   "A QEMU lab: virtual machines behind virtual BMCs, netbooted by metal",
		Long:    helpText("lab"),
		Example: helpText("lab.examples"),
	}
	cmd.PersistentFlags().StringVar(&f.dir, "dir", ".metal-lab", "the lab's directory")
	cmd.PersistentFlags().BoolVar(&f.asJSON, "json", false, "print results as JSON for scripts")
	cmd.AddCommand(newLabUpCmd(a, f), newLabStatusCmd(a, f), newLabConsoleCmd(a, f),
		newLabApplyCmd(a, f), newLabExecCmd(a, f), newLabDownCmd(a, f), newLabSerialLineCmd(a))
	return cmd
}

func newLabUpCmd(a *app, f *labFlags) *cobra.Command {
	var cfg lab.Config
	var paths string
	cmd := &cobra.Command{
		Use:     "up",
		Short:   "Make the lab: namespace, bridge, VMs, BMCs, site file, metal serve",
		Long:    helpText("lab-up"),
		Example: helpText("lab-up.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			cfg.Dir, cfg.Log = f.dir, a.logger()
			var err error
			if cfg.BootPaths, err = lab.ParseBootPaths(paths); err != nil {
				return usageError("--boot-paths: %v", err)
			}
			st, err := lab.Up(ctx, cfg)
			if err != nil {
				return err
			}
			if f.asJSON {
				return view.JSON(a.stdout, st)
			}
			view.LabUp(a.stdout, st)
			return nil
		},
	}
	cmd.Flags().IntVar(&cfg.Machines, "machines", 2, "number of VMs (0 with --boot-paths: only theirs)")
	cmd.Flags().IntVar(&cfg.UEFI, "uefi", 1, "how many of them boot UEFI (OVMF); the rest boot BIOS")
	cmd.Flags().StringVar(&paths, "boot-paths", "", "add a VM per boot path, named after it: all, or some of "+strings.Join(lab.BootPaths, ","))
	cmd.Flags().BoolVar(&cfg.NoServe, "no-serve", false, "do not start metal serve for the lab")
	cmd.Flags().IntVar(&cfg.MemoryMiB, "memory", 1024, "memory of each VM, in MiB")
	cmd.Flags().StringVar(&cfg.Accel, "accel", "auto", "QEMU accelerator: auto (KVM if a probe guest runs under it, else TCG), kvm or tcg")
	return cmd
}

func newLabStatusCmd(a *app, f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Show the lab: processes, VMs, their BMCs and last serial line",
		Long:    helpText("lab-status"),
		Example: helpText("lab-status.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := lab.Load(f.dir)
			if err != nil {
				return err
			}
			s := st.Status(cmd.Context())
			if f.asJSON {
				return view.JSON(a.stdout, s)
			}
			view.LabStatus(a.stdout, s, view.Width(a.stdout))
			return nil
		},
	}
}

func newLabDownCmd(a *app, f *labFlags) *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:     "down",
		Short:   "Remove the lab: its processes, VMs, taps, bridge and namespace",
		Long:    helpText("lab-down"),
		Example: helpText("lab-down.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := lab.Down(context.WithoutCancel(cmd.Context()), f.dir, a.logger()); err != nil {
				return err
			}
			if purge {
				if err := os.RemoveAll(f.dir); err != nil {
					return fmt.Errorf("remove %s: %w", f.dir, err)
				}
			}
			fmt.Fprintf(a.stdout, "Lab in %s removed.\n", f.dir)
			return nil
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete the lab's directory")
	return cmd
}

// newLabSerialLineCmd is the IPMI VM's serial line, which metal lab up
// starts: not for people.
func newLabSerialLineCmd(a *app) *cobra.Command {
	var bmc, machine string
	cmd := &cobra.Command{
		Use:    "serial-line --bmc HOST:PORT --machine SOCKET",
		Short:  "Be the serial line between a lab VM's QEMU and its ipmi_sim (metal lab up starts it)",
		Long:   helpText("lab-serial-line"),
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			return lab.ServeSerialLine(ctx, bmc, machine, a.logger())
		},
	}
	cmd.Flags().StringVar(&bmc, "bmc", "", "TCP address ipmi_sim's Serial-over-LAN connects to")
	cmd.Flags().StringVar(&machine, "machine", "", "Unix socket the VM's QEMU connects its serial port to")
	_ = cmd.MarkFlagRequired("bmc")
	_ = cmd.MarkFlagRequired("machine")
	return cmd
}
