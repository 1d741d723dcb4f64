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
		Use:   "serve [--site FILE]",
		Short: "Run metal's daemon: DHCP, TFTP and HTTP boot for the site",
		Long: `Serve runs metal's netboot services for a site until it is interrupted:

  DHCP   on each network's interface (mode "dhcp" or "proxy"), with
         reservations for declared machines and the pool for others
  TFTP   the iPXE binaries (from Debian's ipxe package, or ipxe_dir)
  HTTP   per-machine iPXE scripts, kernels and initrds (listen address)

The site's machines are recorded in the state store (the site's state
setting) and the servers answer from it: each machine's address and the
boot intent the converge engine wrote for it (` + "`metal apply`" + `). A machine
not in the site gets a pool address; with unknown_machines = "discover" it
boots the install agent, which reports it; with "ignore", nothing at all.
Leases survive restarts.

The web console (/console/), the JSON API (/api/v1/, documented at
/api/v1/openapi.yaml) and Prometheus metrics (/metrics) have a listener of
their own, --api-listen, on loopback (127.0.0.1:9090) unless told
otherwise: the boot network is where untrusted machines live, and API
tokens and console cookies must not cross it (SECURITY.md). Give it a
management interface's address to reach it from elsewhere, and --tls-cert
and --tls-key to speak HTTPS. The API and console need a token: create
one with ` + "`metal token create --site FILE --role ROLE`" + `. --api-on-boot-network
puts them back on the netboot listener, as metal once did, with a warning
at start.

Serving DHCP and TFTP needs root, or just the capability to bind ports
below 1024 (CAP_NET_BIND_SERVICE), as the packaged systemd unit gives it.
SIGHUP (systemctl reload metal) reads the site file again and serves
what it says now, as an apply of an edited file does; a change that needs a
restart (networks, listen, state) is refused and logged. Under systemd
(Type=notify) metal says it is ready once every listener is up.` + deprecatedFileArg,
		Example: `  sudo metal serve --site hcl-examples/qemu-lab.hcl
  sudo metal serve --site site.hcl --state-dir /var/lib/metal --listen 10.0.0.2:8080
  # console, API and metrics on the management network only, over HTTPS:
  sudo metal serve --site site.hcl --api-listen 10.9.0.2:8443 --tls-cert /etc/metal/tls.crt --tls-key /etc/metal/tls.key
  # ... or on loopback only, the default (reach them through an SSH tunnel):
  ssh -L 9090:127.0.0.1:9090 metal-server   # then http://127.0.0.1:9090/console/
  # a lab or benchmark whose clients ask more often than a real boot does:
  sudo metal serve --site site.hcl --dhcp-rate-limit 100/10ms
  sudo metal serve --site site.hcl --dhcp-rate-limit off
  # the primary of a disaster-recovery pair: snapshots and a heartbeat
  # every minute for a standby (metal standby), fenced by metal promote:
  sudo metal serve --site site.hcl --backup-to sftp://metal@backup.example/ams1 --backup-every 1m`,
		Args: cobra.MaximumNArgs(1),
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
