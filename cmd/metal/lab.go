package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/lab"
)

type labFlags struct {
	dir      string
	asJSON   bool
	machines int
	uefi     int
	noServe  bool
	memory   int
	accel    string
}

func newLabCmd(a *app) *cobra.Command {
	f := &labFlags{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A QEMU lab: virtual machines behind virtual BMCs, netbooted by metal",
		Long: `The lab is a rack in a box: QEMU virtual machines with blank disks, each
behind a BMC (metal's virtual Redfish BMC, and OpenIPMI's ipmi_sim for one of
them, so both protocols run), on a bridge inside a network namespace of its
own, so the host network is never touched. ` + "`lab up`" + ` writes the lab's site
file and starts ` + "`metal serve`" + ` for it; ` + "`lab apply`" + ` provisions every VM from it,
as metal provisions a real rack: power on through the BMC, PXE, install
agent, image written, boot from disk.

Everything lives in one directory (--dir, default .metal-lab): site.hcl,
lab.json (what runs, by pid), each VM's disk, serial log and console socket
under vms/NAME/, and the logs of metal and the BMCs under logs/.

Addresses inside the lab: metal 192.0.2.1 (HTTP :8080), Redfish BMCs
192.0.2.2:8001..., ipmi_sim 192.0.2.3:623, machines 192.0.2.11 onwards.

The lab needs root (network namespaces), qemu-system-x86, ipxe-qemu, ovmf,
openipmi and ipmitool; ` + "`make lab`" + ` installs them and runs it all.`,
		Example: `  sudo metal lab up --machines 2 --uefi 1
  sudo metal lab apply                  # provision every VM
  sudo metal lab status                 # VMs, BMCs, last serial line
  sudo metal lab console vm-2           # serial console; Ctrl-] leaves
  sudo metal lab exec -- metal bmc status --site .metal-lab/site.hcl
  sudo metal lab down`,
	}
	cmd.PersistentFlags().StringVar(&f.dir, "dir", ".metal-lab", "the lab's directory")
	cmd.PersistentFlags().BoolVar(&f.asJSON, "json", false, "print results as JSON for scripts")
	cmd.AddCommand(newLabUpCmd(a, f), newLabStatusCmd(a, f), newLabConsoleCmd(a, f),
		newLabApplyCmd(a, f), newLabExecCmd(a, f), newLabDownCmd(a, f))
	return cmd
}

func newLabUpCmd(a *app, f *labFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Make the lab: namespace, bridge, VMs, BMCs, site file, metal serve",
		Long: `Up makes a lab of --machines VMs, the last --uefi of them booting OVMF (UEFI)
and the others SeaBIOS. With two or more, vm-1 is behind ipmi_sim and the
others behind metal's Redfish BMC. The VMs stay off until something powers
them on through their BMC (metal lab apply does).

A lab left in --dir by an earlier up (even one that crashed) is removed first:
its processes, taps, bridge and namespace. Disks and state start blank.

--accel auto (the default) boots a one-sector probe guest under KVM first and
uses KVM only if it prints on its serial port within seconds: some hosts
(nested, paravirtualised clouds) have a /dev/kvm that opens but runs no
guest. Otherwise the VMs run under TCG, which works everywhere and is slower
(a netboot and install take minutes instead of seconds); the log says why.
--accel kvm fails instead of falling back; --accel tcg skips the probe.`,
		Example: `  sudo metal lab up
  sudo metal lab up --machines 4 --uefi 2 --dir /tmp/lab4
  sudo metal lab up --no-serve   # metal apply then serves for its own length
  sudo metal lab up --accel tcg  # never KVM`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			st, err := lab.Up(ctx, lab.Config{
				Dir: f.dir, Machines: f.machines, UEFI: f.uefi, NoServe: f.noServe,
				MemoryMiB: f.memory, Accel: f.accel, Log: a.logger(),
			})
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
	cmd.Flags().IntVar(&f.machines, "machines", 2, "number of VMs")
	cmd.Flags().IntVar(&f.uefi, "uefi", 1, "how many of them boot UEFI (OVMF); the rest boot BIOS")
	cmd.Flags().BoolVar(&f.noServe, "no-serve", false, "do not start metal serve for the lab")
	cmd.Flags().IntVar(&f.memory, "memory", 1024, "memory of each VM, in MiB")
	cmd.Flags().StringVar(&f.accel, "accel", "auto", "QEMU accelerator: auto (KVM if a probe guest runs under it, else TCG), kvm or tcg")
	return cmd
}

func newLabStatusCmd(a *app, f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the lab: processes, VMs, their BMCs and last serial line",
		Long: `Status shows whether each lab process (BMCs, metal serve) still runs and,
for each VM, its firmware, BMC, whether QEMU runs, metal's state for the
machine (asked of the lab's running metal serve over its local socket, or
read from the store when none runs) and the last line on its serial console.`,
		Example: `  sudo metal lab status
  sudo metal lab status --json | jq '.vms[] | {name, running, state}'`,
		Args: cobra.NoArgs,
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
		Use:   "down",
		Short: "Remove the lab: its processes, VMs, taps, bridge and namespace",
		Long: `Down stops the processes the lab started (only if their pid still names the
process it started), the VMs, anything else left in the lab's namespace,
then removes the taps, the bridge and the namespace. The directory stays,
with logs, serial logs and disks, unless --purge.`,
		Example: `  sudo metal lab down
  sudo metal lab down --purge`,
		Args: cobra.NoArgs,
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
