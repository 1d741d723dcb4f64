package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/bmc/scan"
	"github.com/metal-dev/metal/site"
	"github.com/metal-dev/metal/site/scaffold"
)

type initFlags struct {
	opts                      scaffold.Options
	subnet, gateway, serverIP string
	dns                       []string
	pool, bmcSubnet, output   string
	scan, force               bool
	scanTimeout               time.Duration
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
			if f.scan {
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
	fl.StringVar(&f.subnet, "subnet", "", "the boot network, CIDR (default: the interface's)")
	fl.StringVar(&f.gateway, "gateway", "", "the machines' router (default: metal's address, else the subnet's first host)")
	fl.StringVar(&f.serverIP, "server-ip", "", "metal's address on the boot network (default: the interface's, else the gateway)")
	fl.StringSliceVar(&f.dns, "dns", nil, "DNS servers for the machines (default: the gateway)")
	fl.StringVar(&f.pool, "pool", "", "START-END addresses for machines not in the file (default: the subnet's last quarter)")
	fl.StringVar(&f.opts.Mode, "mode", "dhcp", `"dhcp", or "proxy" beside another DHCP server`)
	fl.IntVar(&f.opts.Port, "port", 8080, "HTTP port machines boot from")
	fl.StringVar(&f.opts.State, "state", "", "state store URL (default: file:///var/lib/metal/state.db if /var/lib/metal exists, else file://.metal/state.db)")
	fl.BoolVar(&f.scan, "scan", false, "probe --bmc-subnet for Redfish and IPMI BMCs")
	fl.StringVar(&f.bmcSubnet, "bmc-subnet", "", "where the BMCs live, CIDR (default: the boot subnet); at most a /20")
	fl.DurationVar(&f.scanTimeout, "scan-timeout", 2*time.Second, "how long each address gets to answer")
	return cmd
}

// complete turns the flags into scaffold options, finding what the host's
// interfaces say and asking on a terminal for what is still missing.
func (f *initFlags) complete(a *app) error {
	if f.opts.Interface == "" && f.subnet == "" && view.IsTerminal(a.stdin) {
		fmt.Fprintln(a.stderr, "metal serves DHCP, TFTP and HTTP on one interface of the boot network.")
		f.opts.Interface = view.Ask(a.stdin, a.stderr, "Interface (ip -br addr lists them)", "")
	}
	if f.subnet != "" {
		p, err := netip.ParsePrefix(f.subnet)
		if err != nil {
			return usageError("--subnet %q: %v (write CIDR, like 10.0.0.0/24)", f.subnet, err)
		}
		f.opts.Subnet = p.Masked()
	}
	host, err := scaffold.HostAddrs()
	if err != nil {
		return err
	}
	if err := f.opts.Locate(host); err != nil {
		return usageError("%v", err)
	}
	for _, v := range []struct {
		flag, val string
		dst       *netip.Addr
	}{{"--server-ip", f.serverIP, &f.opts.ServerIP}, {"--gateway", f.gateway, &f.opts.Gateway}} {
		if v.val == "" {
			continue
		}
		ip, err := netip.ParseAddr(v.val)
		if err != nil {
			return usageError("%s %q: %v", v.flag, v.val, err)
		}
		*v.dst = ip
	}
	if !f.opts.Gateway.IsValid() && f.opts.ServerIP.IsValid() {
		f.opts.Gateway = f.opts.ServerIP
	}
	for _, d := range f.dns {
		ip, err := netip.ParseAddr(d)
		if err != nil {
			return usageError("--dns %q: %v", d, err)
		}
		f.opts.DNS = append(f.opts.DNS, ip)
	}
	if f.pool != "" {
		if f.opts.PoolStart, f.opts.PoolEnd, err = scaffold.ParsePool(f.pool); err != nil {
			return usageError("%v", err)
		}
	}
	if f.opts.State == "" {
		f.opts.State = scaffold.DefaultState()
	}
	f.opts.BMCSubnet = f.opts.Subnet
	if f.bmcSubnet != "" {
		p, err := netip.ParsePrefix(f.bmcSubnet)
		if err != nil {
			return usageError("--bmc-subnet %q: %v", f.bmcSubnet, err)
		}
		f.opts.BMCSubnet = p.Masked()
	}
	if !f.scan {
		f.opts.BMCSubnet = netip.Prefix{}
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
