package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/dhcp"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/tftp"
	"github.com/metal-dev/metal/site"
	"github.com/metal-dev/metal/site/netboot"
)

func init() { register(newServeCmd) }

type serveFlags struct {
	vars     varFlags
	stateDir string
	listen   string
	tftpAddr string
}

func newServeCmd(a *app) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve FILE",
		Short: "Run metal's daemon: DHCP, TFTP and HTTP boot for the site",
		Long: `Serve runs metal's netboot services for a site until it is interrupted:

  DHCP   on each network's interface (mode "dhcp" or "proxy"), with
         reservations for declared machines and the pool for others
  TFTP   the iPXE binaries (from Debian's ipxe package, or ipxe_dir)
  HTTP   per-machine iPXE scripts, kernels and initrds (listen address)

Leases are kept in the state directory and survive restarts. The servers
answer from what the site declares for each MAC; a machine not in the site
gets a pool address and, with unknown_machines = "ignore", nothing at all.

Serving DHCP and TFTP needs root (ports 67 and 69, binding to interfaces).`,
		Example: `  sudo metal serve hcl-examples/qemu-lab.hcl
  sudo metal serve --state-dir /var/lib/metal --listen 10.0.0.2:8080 site.hcl`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, diags := f.vars.load(args[0])
			writeDiags(a.stderr, res.Files, diags)
			if diags.HasErrors() {
				return silentExit(exitFailed)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, a.logger(), res.Site, filepath.Dir(args[0]), f)
		},
	}
	f.vars.register(cmd)
	cmd.Flags().StringVar(&f.stateDir, "state-dir", "", "directory for leases and staged files (default: beside the site's file:// state)")
	cmd.Flags().StringVar(&f.listen, "listen", "", "HTTP listen address (default: the site's listen setting)")
	cmd.Flags().StringVar(&f.tftpAddr, "tftp-addr", ":69", "TFTP listen address")
	return cmd
}

// serve runs every service of the site until ctx ends or one fails.
func serve(ctx context.Context, log *slog.Logger, s *site.Site, siteDir string, f serveFlags) error {
	stateDir := f.stateDir
	if stateDir == "" {
		stateDir = defaultStateDir(s.Settings.State, siteDir)
	}
	if err := os.MkdirAll(stateDir, 0o750); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	ipxeFiles, err := bootfiles.FindIPXE(s.Settings.IPXEDir)
	if err != nil {
		return err
	}
	imageDir := images.Dir{Path: filepath.Join(stateDir, "images")}
	for image, srcs := range netboot.LocalSources(s) {
		for _, src := range srcs {
			path := netboot.ResolvePath(siteDir, src)
			if _, err := imageDir.StageLocal(image, filepath.Base(path), path, src.Checksum); err != nil {
				return fmt.Errorf("image %q: %w", image, err)
			}
		}
	}
	if err := os.MkdirAll(imageDir.Path, 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	imageRoot, err := bootfiles.OpenRoot(imageDir.Path)
	if err != nil {
		return err
	}
	key, err := tokenKey(filepath.Join(stateDir, "token.key"))
	if err != nil {
		return err
	}
	policy := netboot.New(s, netboot.Options{TokenKey: key})

	listen := f.listen
	if listen == "" {
		listen = s.Settings.Listen
	}
	g, ctx := errgroup.WithContext(ctx)
	var leases multiLeases
	var baseURL string
	for _, n := range s.Networks {
		if n.Mode == site.ModeOff || n.Interface == "" {
			continue
		}
		serverIP, err := interfaceAddr(n.Interface, n.Subnet)
		if err != nil {
			return fmt.Errorf("network %q: %w", n.Name, err)
		}
		if baseURL == "" {
			baseURL, err = httpBaseURL(listen, serverIP)
			if err != nil {
				return err
			}
		}
		cfg := dhcp.Config{
			Interface:     n.Interface,
			ServerIP:      serverIP,
			Subnets:       []dhcp.Subnet{dhcpSubnet(n)},
			IgnoreUnknown: s.Settings.UnknownMachines == "ignore",
			HTTPBaseURL:   baseURL,
		}
		if n.Mode == site.ModeProxy {
			cfg.Mode = dhcp.ModeProxy
		}
		// Networks reached through relays are answered by the server on
		// the first interface: relayed requests arrive unicast to it.
		if len(leases) == 0 {
			for _, r := range s.Networks {
				if r.Interface == "" && len(r.RelayAgents) > 0 && r.Mode != site.ModeOff {
					cfg.Subnets = append(cfg.Subnets, dhcpSubnet(r))
				}
			}
		}
		store := dhcp.NewFileStore(filepath.Join(stateDir, "leases-"+n.Name+".json"))
		srv, err := dhcp.NewServer(cfg, policy, store, log.With("network", n.Name))
		if err != nil {
			return fmt.Errorf("network %q: %w", n.Name, err)
		}
		leases = append(leases, srv.Leases())
		g.Go(func() error { return srv.Serve(ctx) })
		log.Info("dhcp serving", "network", n.Name, "interface", n.Interface, "server_ip", serverIP, "mode", n.Mode)
	}
	if baseURL == "" {
		if baseURL, err = httpBaseURL(listen, netip.Addr{}); err != nil {
			return err
		}
	}
	base, err := url.Parse(baseURL)
	if err != nil {
		return fmt.Errorf("http base URL: %w", err)
	}

	tftpSrv, err := tftp.New(tftp.Config{Addr: f.tftpAddr, IPXE: ipxeFiles, Logger: log})
	if err != nil {
		return err
	}
	httpSrv, err := pxehttp.New(pxehttp.Config{
		Addr: listen, Policy: policy, Leases: leases, IPXE: ipxeFiles, Images: imageRoot,
		BaseURL: base, Logger: log,
	})
	if err != nil {
		return err
	}
	g.Go(func() error { return tftpSrv.Serve(ctx) })
	g.Go(func() error { return httpSrv.Serve(ctx) })
	log.Info("metal serving", "site", s.Name, "machines", len(s.Machines), "http", baseURL, "tftp", f.tftpAddr, "state_dir", stateDir)
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func dhcpSubnet(n *site.Network) dhcp.Subnet {
	return dhcp.Subnet{
		CIDR: n.Subnet, Gateway: n.Gateway, DNS: n.DNS, Domain: n.Domain,
		PoolStart: n.PoolStart, PoolEnd: n.PoolEnd, LeaseTime: n.LeaseTime,
	}
}

// defaultStateDir puts leases and staged files beside a file:// state
// store; with etcd, in .metal beside the site file.
func defaultStateDir(state, siteDir string) string {
	if p, ok := strings.CutPrefix(state, "file://"); ok {
		if !filepath.IsAbs(p) {
			p = filepath.Join(siteDir, p)
		}
		return filepath.Dir(p)
	}
	return filepath.Join(siteDir, ".metal")
}

// interfaceAddr returns the interface's IPv4 address inside subnet: the
// address DHCP identifies itself with and machines reach TFTP and HTTP on.
func interfaceAddr(name string, subnet netip.Prefix) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %q: %w (is the network's interface setting right? `ip link` lists them)", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %q: %w", name, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && subnet.Contains(ip) {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %q has no address in %s; give it one (ip addr add ... dev %s)", name, subnet, name)
}

// httpBaseURL is the URL machines fetch scripts and kernels from: the
// listen address, with an unspecified host replaced by the server's address
// on the boot network.
func httpBaseURL(listen string, serverIP netip.Addr) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		if !serverIP.IsValid() {
			return "", fmt.Errorf("listen address %q has no host and no network has an interface; write listen = \"ADDRESS:PORT\"", listen)
		}
		host = serverIP.String()
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// tokenKey reads the key script tokens are signed with, creating it on first
// use, so tokens stay valid across restarts.
func tokenKey(path string) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) >= 32 {
		return b, nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	return b, nil
}

// multiLeases answers for the leases of every DHCP server.
type multiLeases []pxe.Leases

func (m multiLeases) LeasedIP(mac net.HardwareAddr) (net.IP, bool) {
	for _, l := range m {
		if ip, ok := l.LeasedIP(mac); ok {
			return ip, true
		}
	}
	return nil, false
}

func (m multiLeases) MACOf(ip net.IP) (net.HardwareAddr, bool) {
	for _, l := range m {
		if mac, ok := l.MACOf(ip); ok {
			return mac, true
		}
	}
	return nil, false
}
