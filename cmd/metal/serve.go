package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/pxe/dhcp"
	"github.com/metal-dev/metal/site"
)

type serveFlags struct {
	vars      varFlags
	site      siteFlag
	stateDir  string
	listen    string
	tftpAddr  string
	dhcpRate  string
	dhcpPool  string
	openReads bool
	consoles  string
	api       daemon.APIListen
	agent     agentBootFlags
	primary   primaryFlags
}

func newServeCmd(a *app) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:     "serve [--site FILE]",
		Short:   "Run metal's daemon: DHCP, TFTP and HTTP boot for the site",
		Long:    helpText("serve") + deprecatedFileArg,
		Example: helpText("serve.examples"),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := f.site.file(args)
			if err != nil {
				return err
			}
			res, diags := f.vars.load(path)
			view.Diags(a.stderr, res.Files, diags)
			if diags.HasErrors() {
				return silentExit(exitFailed)
			}
			if f.api.Shared {
				if cmd.Flags().Changed("api-listen") {
					return usageError("--api-on-boot-network and --api-listen: the console and API either share the netboot listener or have their own, not both")
				}
				f.api.Addr = ""
			}
			limit, err := dhcp.ParseRateLimit(f.dhcpRate, f.dhcpPool)
			if err != nil {
				return usageError("--dhcp-rate-limit, --dhcp-pool-budget: %v", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			src, err := siteSource(path, res, f.vars)
			if err != nil {
				return err
			}
			return serve(ctx, a.logger(), res.Site, filepath.Dir(path), src, f, limit)
		},
	}
	f.vars.register(cmd)
	f.site.register(cmd.Flags())
	f.primary.register(cmd)
	cmd.Flags().StringVar(&f.stateDir, "state-dir", "", "directory for leases and staged files (default: beside the site's file:// state)")
	cmd.Flags().StringVar(&f.listen, "listen", "", "HTTP listen address (default: the site's listen setting)")
	cmd.Flags().StringVar(&f.tftpAddr, "tftp-addr", ":69", "TFTP listen address")
	cmd.Flags().StringVar(&f.api.Addr, "api-listen", daemon.DefaultAPIListen,
		"listen address of the console, API and metrics, apart from netboot (empty: none)")
	cmd.Flags().BoolVar(&f.api.Shared, "api-on-boot-network", false,
		"serve the console, API and metrics on the netboot listener too (tokens and cookies then cross the boot network in clear)")
	cmd.Flags().StringVar(&f.api.TLSCert, "tls-cert", "", "PEM certificate (chain) for HTTPS on --api-listen")
	cmd.Flags().StringVar(&f.api.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	f.agent.register(cmd)
	cmd.Flags().BoolVar(&f.openReads, "open-reads", false,
		"let anyone on the network read the API and console without a token (actions always need one)")
	cmd.Flags().StringVar(&f.consoles, "console-socket", "",
		"unix socket of each machine's serial console, {machine} for its name (QEMU -chardev socket; the lab sets it): the console's terminal and the API read it")
	cmd.Flags().StringVar(&f.dhcpRate, "dhcp-rate-limit", "10/500ms",
		"DHCP packets answered per MAC: BURST/INTERVAL (a burst, then one per interval), or off (the pool budget too)")
	cmd.Flags().StringVar(&f.dhcpPool, "dhcp-pool-budget", "64/1s",
		"new pool addresses for unknown MACs, all of them together: BURST/INTERVAL; declared machines are never counted")
	return cmd
}

// serve runs the site's daemon until ctx ends or a service fails.
func serve(ctx context.Context, log *slog.Logger, s *site.Site, siteDir string, src loadedSite, f serveFlags, limit dhcp.RateLimit) error {
	// A fenced primary stops here, before it answers anything.
	primary, err := f.primary.startPrimary(ctx, log, s.Name, stateDir(s, siteDir, f.stateDir))
	if err != nil {
		return err
	}
	return daemon.Run(ctx, daemon.Options{
		Site: s, SiteDir: siteDir, StateDir: f.stateDir, Listen: f.listen, TFTPAddr: f.tftpAddr,
		SiteFile: src.path, SiteDigest: src.digest, Reload: src.reload,
		Agent:         daemon.AgentOptions{Boot: f.agent.boot()},
		DHCPRateLimit: limit, OpenReads: f.openReads, ConsoleSocket: f.consoles, API: f.api, Logger: log,
	}, primary)
}
