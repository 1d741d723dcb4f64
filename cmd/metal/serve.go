package main

import (
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/pxe/dhcp"
	"github.com/metal-dev/metal/site"
)

// serveFlags parse into the daemon's options (opts), but for what comes
// from the site file.
type serveFlags struct {
	site     arguments.Site
	opts     daemon.Options
	dhcpRate string
	dhcpPool string
	agent    arguments.AgentBoot
	primary  arguments.Primary
}

func newServeCmd(a *app) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:     "serve [--site FILE]",
		Short:   "Run metal's daemon: DHCP, TFTP and HTTP boot for the site",
		Long:    helpText("serve") + helpText("site-file-arg"),
		Example: helpText("serve.examples"),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, path, err := f.site.Load(a.stderr, args)
			if err != nil {
				return err
			}
			if f.opts.API.Shared {
				if cmd.Flags().Changed("api-listen") {
					return usageError("--api-on-boot-network and --api-listen: the console and API either share the netboot listener or have their own, not both")
				}
				f.opts.API.Addr = ""
			}
			limit, err := dhcp.ParseRateLimit(f.dhcpRate, f.dhcpPool)
			if err != nil {
				return usageError("--dhcp-rate-limit, --dhcp-pool-budget: %v", err)
			}
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			abs, err := filepath.Abs(path)
			if err != nil {
				return err
			}
			s, siteDir, log := res.Site, filepath.Dir(path), a.logger()
			// A fenced primary stops here, before it answers anything.
			primary, err := f.primary.Start(ctx, log, s.Name, stateDir(s, siteDir, f.opts.StateDir))
			if err != nil {
				return err
			}
			opts := f.opts
			opts.Site, opts.SiteDir, opts.Logger = s, siteDir, log
			opts.SiteFile, opts.SiteDigest, opts.Reload = abs, res.Digest(), site.Reloader(abs, path, f.site.Vars.Options())
			opts.Agent.Boot, opts.DHCPRateLimit = f.agent.Boot(), limit
			return daemon.Run(ctx, opts, primary)
		},
	}
	f.site.Register(cmd.Flags())
	f.primary.Register(cmd.Flags())
	arguments.Servers(cmd.Flags(), &f.opts)
	cmd.Flags().StringVar(&f.opts.API.Addr, "api-listen", daemon.DefaultAPIListen,
		"listen address of the console, API and metrics, apart from netboot (empty: none)")
	cmd.Flags().BoolVar(&f.opts.API.Shared, "api-on-boot-network", false,
		"serve the console, API and metrics on the netboot listener too (tokens and cookies then cross the boot network in clear)")
	cmd.Flags().StringVar(&f.opts.API.TLSCert, "tls-cert", "", "PEM certificate (chain) for HTTPS on --api-listen")
	cmd.Flags().StringVar(&f.opts.API.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	f.agent.Register(cmd.Flags())
	cmd.Flags().BoolVar(&f.opts.OpenReads, "open-reads", false,
		"let anyone on the network read the API and console without a token (actions always need one)")
	cmd.Flags().StringVar(&f.opts.ConsoleSocket, "console-socket", "",
		"unix socket of each machine's serial console, {machine} for its name (QEMU -chardev socket; the lab sets it): the console's terminal and the API read it")
	cmd.Flags().BoolVar(&f.opts.NoConsoleLogs, "no-console-logs", false,
		"do not hold machines' serial consoles (lab sockets, IPMI Serial-over-LAN) open to log what they print under the state directory (consoles/NAME.log, 1 MiB, rotated once); a console is then opened only while someone watches it")
	cmd.Flags().StringVar(&f.dhcpRate, "dhcp-rate-limit", "10/500ms",
		"DHCP packets answered per MAC: BURST/INTERVAL (a burst, then one per interval), or off (the pool budget too)")
	cmd.Flags().StringVar(&f.dhcpPool, "dhcp-pool-budget", "64/1s",
		"new pool addresses for unknown MACs, all of them together: BURST/INTERVAL; declared machines are never counted")
	return cmd
}
