package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/bmc/scan"
	"github.com/metal-dev/metal/site"
	"github.com/metal-dev/metal/site/scaffold"
)

type initFlags struct {
	opts        scaffold.Options
	in          scaffold.Inputs
	output      string
	force       bool
	scanTimeout time.Duration
}

func newInitCmd(a *app) *cobra.Command {
	var f initFlags
	cmd := &cobra.Command{
		Use:     "init [flags]",
		Short:   "Write a first site file for a network, with the BMCs a scan finds",
		Long:    helpText("init"),
		Example: helpText("init.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := f.complete(a); err != nil {
				return err
			}
			if f.in.Scan {
				bmcs, err := f.scanBMCs(ctx, a)
				if err != nil {
					return err
				}
				f.opts.BMCs = bmcs
			}
			src, err := scaffold.Render(f.opts)
			if err != nil {
				return usageError("%v", err)
			}
			if f.output == "-" {
				_, err := a.stdout.Write(src)
				return err
			}
			if _, err := os.Stat(f.output); err == nil && !f.force {
				return fmt.Errorf("%s exists; init does not overwrite it without --force", f.output)
			}
			if err := os.WriteFile(f.output, src, 0o640); err != nil {
				return err
			}
			res, diags := site.LoadFile(f.output, site.Options{})
			view.Diags(a.stderr, res.Files, diags)
			if diags.HasErrors() {
				return silentExit(exitFailed)
			}
			fmt.Fprintf(a.stdout, "Wrote %s: valid, network %s on %s, %d BMC(s) found as commented machines.\nNext: metal plan %s\n",
				f.output, f.opts.Subnet.Masked(), f.opts.Interface, len(f.opts.BMCs), f.output)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.output, "output", "o", "site.hcl", "file to write, or - for standard output")
	fl.BoolVar(&f.force, "force", false, "overwrite the output file if it exists")
	fl.StringVar(&f.opts.Name, "name", "", `the site's name (default "site")`)
	fl.StringVar(&f.opts.Network, "network", "", `the network block's name (default "boot")`)
	fl.StringVar(&f.opts.Interface, "interface", "", "metal's interface on the boot network")
	fl.StringVar(&f.in.Subnet, "subnet", "", "the boot network, CIDR (default: the interface's)")
	fl.StringVar(&f.in.Gateway, "gateway", "", "the machines' router (default: metal's address, else the subnet's first host)")
	fl.StringVar(&f.in.ServerIP, "server-ip", "", "metal's address on the boot network (default: the interface's, else the gateway)")
	fl.StringSliceVar(&f.in.DNS, "dns", nil, "DNS servers for the machines (default: the gateway)")
	fl.StringVar(&f.in.Pool, "pool", "", "START-END addresses for machines not in the file (default: the subnet's last quarter)")
	fl.StringVar(&f.opts.Mode, "mode", "dhcp", `"dhcp", or "proxy" beside another DHCP server`)
	fl.IntVar(&f.opts.Port, "port", 8080, "HTTP port machines boot from")
	fl.StringVar(&f.opts.State, "state", "", "state store URL (default: file:///var/lib/metal/state.db if /var/lib/metal exists, else file://.metal/state.db)")
	fl.BoolVar(&f.in.Scan, "scan", false, "probe --bmc-subnet for Redfish and IPMI BMCs")
	fl.StringVar(&f.in.BMCSubnet, "bmc-subnet", "", "where the BMCs live, CIDR (default: the boot subnet); at most a /20")
	fl.DurationVar(&f.scanTimeout, "scan-timeout", 2*time.Second, "how long each address gets to answer")
	return cmd
}

// complete turns the flags into scaffold options, finding what the host's
// interfaces say and asking on a terminal for what is still missing.
func (f *initFlags) complete(a *app) error {
	if f.opts.Interface == "" && f.in.Subnet == "" && view.IsTerminal(a.stdin) {
		fmt.Fprintln(a.stderr, "metal serves DHCP, TFTP and HTTP on one interface of the boot network.")
		f.opts.Interface = view.Ask(a.stdin, a.stderr, "Interface (ip -br addr lists them)", "")
	}
	host, err := scaffold.HostAddrs()
	if err != nil {
		return err
	}
	if err := f.opts.Complete(f.in, host); err != nil {
		return usageError("%v", err)
	}
	f.opts.Command = "metal init"
	return nil
}

func (f *initFlags) scanBMCs(ctx context.Context, a *app) ([]scan.Found, error) {
	addrs, err := scan.Hosts(f.opts.BMCSubnet)
	if err != nil {
		return nil, usageError("%v", err)
	}
	fmt.Fprintf(a.stderr, "Scanning %d addresses of %s for Redfish and IPMI BMCs...\n", len(addrs), f.opts.BMCSubnet)
	found, err := scan.Scan(ctx, addrs, scan.Options{Timeout: f.scanTimeout})
	if err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	for _, b := range found {
		fmt.Fprintf(a.stderr, "  %-8s %s %s\n", b.Protocol, b.Address, b.Product)
	}
	return found, nil
}
