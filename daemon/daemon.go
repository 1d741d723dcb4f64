// Package daemon composes metal's long-running services for one site: the
// inventory store, the netboot servers (DHCP, TFTP, HTTP) answering from
// the store's boot intents, and the recording of each machine's boot
// timeline. `metal serve` runs it until interrupted; `metal apply` runs it
// in-process for the length of an apply when no daemon is running.
package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/daemon/metrics"
	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/internal/ifaddr"
	"github.com/metal-dev/metal/internal/latch"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/dhcp"
	"github.com/metal-dev/metal/pxe/grub"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/storeagent"
	"github.com/metal-dev/metal/pxe/storeleases"
	"github.com/metal-dev/metal/pxe/storepolicy"
	"github.com/metal-dev/metal/pxe/tftp"
	"github.com/metal-dev/metal/site"
)

// Options say which site to serve and where.
type Options struct {
	Site *site.Site
	// SiteDir resolves relative paths of the site file (state, images).
	SiteDir string
	// StateDir holds leases, staged files and keys; default: beside a
	// file:// state store, or .metal beside the site file.
	StateDir string
	// Listen is the HTTP address; default the site's listen setting.
	Listen string
	// TFTPAddr is the TFTP listen address; default ":69".
	TFTPAddr string
	// DHCPRateLimit is each DHCP server's per-MAC limit; the zero value is
	// pxe/dhcp's default (a burst of 10, then 2 packets a second).
	DHCPRateLimit dhcp.RateLimit
	// PowerPoll is how often each machine's BMC is asked for its power
	// state (default 60 s; negative: never).
	PowerPoll time.Duration
	// OpenReads lets the API and console be read without a token;
	// actions always need one (`metal token create`).
	OpenReads bool
	// ConsoleSocket is where machines' serial consoles are served, a
	// unix socket path with {machine} for the name (the lab's QEMU
	// VMs); the console's terminal and the API's console route read
	// them. Machines without one whose BMC speaks IPMI are reached over
	// Serial-over-LAN.
	ConsoleSocket string
	// NoConsoleLogs stops the daemon from holding machines' consoles
	// open to log them (under the state directory's ConsoleLogDir); a
	// console is then opened only while someone watches it.
	NoConsoleLogs bool
	// API, when its address is set, moves the console, API and metrics
	// off the netboot listener to their own, optionally with TLS.
	API APIListen
	// Agent chooses how the install agent is built.
	Agent AgentOptions
	// SiteFile is the site file Site was loaded from, SiteDigest the
	// digest of its content, and Reload loads it again (with the variables
	// it was first loaded with). With them, an apply submitted over the
	// local socket for an edited site file makes the daemon serve the
	// edited site first; without Reload it is refused.
	SiteFile   string
	SiteDigest string
	Reload     func(ctx context.Context) (*site.Site, string, error)
	// Store, when set, is used instead of opening the site's state URL
	// (tests; a caller that already holds the store). The daemon does not
	// close a store it was given.
	Store  inventory.Store
	Logger *slog.Logger
}

// AgentBoot is what a machine netboots to run metal's install agent: paths
// on the daemon's HTTP server and the kernel command line.
type AgentBoot struct {
	Kernel  string
	Initrds []string
	Cmdline string
	// Cmdline6 is Cmdline with metal's URL on IPv6, for machines of
	// IPv6-only networks when BaseURL is on IPv4; empty otherwise.
	Cmdline6 string
	// BaseURL6 is metal's URL on IPv6 when Cmdline6 is set.
	BaseURL6 string
}

// Daemon is one site's running services. Exported fields are set by New
// and read only afterwards; the site itself changes when an apply reloads
// it (Site).
type Daemon struct {
	// Store is the inventory the servers answer from and the engine
	// writes to.
	Store inventory.Store
	// BaseURL is where machines reach the HTTP server ("http://192.0.2.1:8080").
	BaseURL string
	// baseURL6 is where machines of IPv6-only networks reach it, when
	// BaseURL is on IPv4 (the first IPv6 link's address); else empty.
	baseURL6 string
	// Agent is the install agent's boot, zero when no agent could be built.
	Agent AgentBoot
	// secureBootChain: the signed chain (shim, GRUB) was found and is
	// served, so machines found to have Secure Boot on can netboot.
	secureBootChain bool
	// StateDir is the directory of leases, staged files and keys.
	StateDir string

	// siteMu guards the site, its file's digest and its image catalog,
	// which an apply's reload replaces together.
	siteMu     sync.RWMutex
	site       *site.Site
	siteDigest string
	catalog    *images.Catalog
	siteFile   string
	reload     func(context.Context) (*site.Site, string, error)
	cache      *images.Cache // the image cache the catalog's files are in

	log      *slog.Logger
	ownStore bool
	policy   *storepolicy.Policy
	dhcp     []*dhcp.Server
	v6       []v6Servers // router advertisements and DHCPv6 of IPv6 links
	leases   multiLeases
	tftp     *tftp.Server
	http     *pxehttp.Server
	timeline *timeline
	metrics  *metrics.Metrics
	tokens   *api.Tokens
	// consoles is the serial console hub the browser terminal, the API
	// and the local socket share; nil when no machine has a console.
	consoles    *serial.Hub
	consoleOpen consoleOpener
	consoleLogs bool
	power       *apply.PowerPoller
	operator    *operator
	apiSrv      *apiServer
	// sharedAPI: the console, API and metrics are on the netboot listener.
	sharedAPI bool
	applies   submitted
	// owner names this metal on the apply runs it carries out
	// (inventory.ApplyRun.Owner): host, machine-id and process.
	owner string
	// ready is closed once every listener is up (Ready).
	ready latch.Latch
}

// New prepares every service: it opens the store, records the site's
// machines in it, stages boot files and checks interfaces, so that a
// mistake is reported before anything serves. Serve then runs them.
func New(ctx context.Context, opts Options) (_ *Daemon, err error) {
	s := opts.Site
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TFTPAddr == "" {
		opts.TFTPAddr = ":69"
	}
	d := &Daemon{site: s, log: opts.Logger, siteDigest: opts.SiteDigest, siteFile: opts.SiteFile,
		reload: opts.Reload}
	d.StateDir = opts.StateDir
	if d.StateDir == "" {
		d.StateDir = site.DefaultStateDir(s.Settings.State, opts.SiteDir)
	}
	if err := os.MkdirAll(d.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}

	d.owner = fmt.Sprintf("%s pid %d", backup.DefaultOwner(), os.Getpid())
	d.Store = opts.Store
	if d.Store == nil {
		d.Store, err = backend.Open(ctx, site.ResolveState(s.Settings.State, opts.SiteDir), backend.Options{Logger: opts.Logger})
		if err != nil {
			return nil, err
		}
		d.ownStore = true
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if err := SyncSite(ctx, d.Store, s); err != nil {
		return nil, err
	}

	ipxeFiles, err := bootfiles.FindIPXE(s.Settings.IPXEDir)
	if err != nil {
		return nil, err
	}
	signed, err := bootfiles.FindSecureBoot(s.Settings.SecureBootDir)
	switch {
	case err == nil:
		ipxeFiles = bootfiles.Join(ipxeFiles, signed)
		d.secureBootChain = true
	case s.NeedsSecureBoot():
		return nil, fmt.Errorf("a machine boots by %q: %w", site.BootSecure, err)
	default:
		d.log.Debug("no signed boot chain: machines boot = \"secureboot\" cannot netboot", "err", err)
	}
	imageRoot, err := d.prepareImages(ctx, opts.SiteDir)
	if err != nil {
		return nil, err
	}
	filesDir := filepath.Join(d.StateDir, "files")
	if err := os.MkdirAll(filesDir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	filesRoot, err := bootfiles.OpenRoot(filesDir)
	if err != nil {
		return nil, err
	}
	key, err := tokenKey(filepath.Join(d.StateDir, "token.key"))
	if err != nil {
		return nil, err
	}

	listen := opts.Listen
	if listen == "" {
		listen = s.Settings.Listen
	}
	// The boot network's address is where machines reach HTTP: find it
	// before building the agent, whose command line carries it.
	groups, err := dhcpGroups(s, listenHost(listen))
	if err != nil {
		return nil, err
	}
	links, err := v6Links(s, listenHost(listen))
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		if g.addrNote != "" {
			d.log.Info("server address", "interface", g.iface, "ip", g.serverIP, "how", g.addrNote)
		}
	}
	for _, l := range links {
		d.log.Info("server address", "interface", l.net.Interface, "ip", l.serverIP, "how", l.addrNote)
	}
	first := netip.Addr{}
	switch {
	case len(groups) > 0:
		first = groups[0].serverIP
	case len(links) > 0:
		// An IPv6-only site: machines reach metal over IPv6 alone.
		first = links[0].serverIP
	}
	if d.BaseURL, err = httpBaseURL(listen, first); err != nil {
		return nil, err
	}
	base, err := url.Parse(d.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("http base URL: %w", err)
	}
	if h, err := netip.ParseAddr(base.Hostname()); len(links) > 0 && (err != nil || h.Is4()) {
		if d.baseURL6, _, err = links[0].httpOn6(listen); err != nil {
			return nil, err
		}
	}
	d.Agent, err = d.prepareAgent(ctx, filesDir, opts.Agent)
	if err != nil {
		return nil, err
	}

	unknown := pxe.Intent{Action: pxe.ActionNone}
	if s.Settings.UnknownMachines == "discover" && d.Agent.Kernel != "" {
		unknown = pxe.Intent{Action: pxe.ActionDiscover, Kernel: d.Agent.Kernel, Initrd: d.Agent.Initrds, Cmdline: d.Agent.Cmdline}
	}
	d.policy, err = storepolicy.New(ctx, d.Store, storepolicy.Options{Unknown: unknown, TokenKey: key, Logger: d.log})
	if err != nil {
		return nil, err
	}

	d.metrics = metrics.New(metrics.Options{Store: d.Store, Logger: d.log, LeasesInUse: d.leasesInUse,
		PoolAddresses: d.poolAddresses})
	for _, g := range groups {
		// The leases of an interface's networks are one table, kept
		// under its first network's name (the file a site of one network
		// per interface always had).
		n := g.nets[0]
		cfg := dhcp.Config{
			Interface:     g.iface,
			ServerIP:      g.serverIP,
			Subnets:       g.subnets(),
			IgnoreUnknown: s.Settings.UnknownMachines == "ignore",
			HTTPBaseURL:   d.BaseURL,
			RateLimit:     opts.DHCPRateLimit,
			Observe:       d.metrics.ObserveDHCP,
		}
		if g.proxy {
			cfg.Mode = dhcp.ModeProxy
		}
		contacts := dhcpContacts{Policy: d.policy, timeline: func() *timeline { return d.timeline }}
		srv, err := dhcp.NewServer(cfg, contacts, d.leaseStore(n.Name), d.log.With("network", n.Name))
		if err != nil {
			return nil, fmt.Errorf("network %q: %w", n.Name, err)
		}
		d.dhcp = append(d.dhcp, srv)
		d.leases = append(d.leases, srv.Leases())
	}

	var moreHTTP []string
	for _, l := range links {
		base, more, err := l.httpOn6(listen)
		if err != nil {
			return nil, err
		}
		if more != "" {
			moreHTTP = append(moreHTTP, more)
		}
		contacts := dhcpContacts{Policy: d.policy, timeline: func() *timeline { return d.timeline }}
		v6, err := newV6Servers(l, base, contacts, d.log)
		if err != nil {
			return nil, err
		}
		d.v6 = append(d.v6, v6)
		d.leases = append(d.leases, v6.dhcp6.Leases())
	}

	d.tftp, err = tftp.New(tftp.Config{Addr: opts.TFTPAddr, IPXE: ipxeFiles, Logger: d.log, Observe: d.metrics.ObserveTFTP,
		// Signed GRUB has no HTTP: its config, kernels and initrds come
		// over TFTP, by the paths HTTP serves them under.
		Mounts:    map[string]*bootfiles.Root{"files": filesRoot, "images": imageRoot},
		Generated: grub.Configs{Policy: d.policy, Leases: d.leases}})
	if err != nil {
		return nil, err
	}
	d.timeline = newTimeline(d.Store, d.policy, d.leases, d.log)
	agent, err := storeagent.New(storeagent.Config{Store: d.Store, Logger: d.log})
	if err != nil {
		return nil, err
	}
	d.operator = newOperator(d, d.metrics.ObserveBMC)
	if opts.PowerPoll >= 0 {
		d.power = &apply.PowerPoller{Current: d.Site, Store: d.Store, BMC: d.operator.bmcs, Every: opts.PowerPoll, Logger: d.log}
	}
	// Tokens live in the store; an older metal kept them in a file here.
	if _, err := api.MigrateTokenFile(ctx, d.Store, filepath.Join(d.StateDir, api.TokenFile), d.log); err != nil {
		return nil, err
	}
	tokens := api.NewTokens(d.Store, nil, d.log)
	d.tokens = tokens
	if opener := (consoleOpener{sockets: serial.UnixSockets(opts.ConsoleSocket), site: d.Site, log: d.log}); opener.any() {
		d.consoles = serial.NewHub(opener)
		d.consoleOpen, d.consoleLogs = opener, !opts.NoConsoleLogs
	}
	consoles := d.consoles
	extra := map[string]http.Handler{
		api.Prefix: api.New(api.Options{Store: d.Store, Actions: d.operator, Serial: consoles, ConsoleLog: d.consoleLogFunc(),
			Planner: d.operator, Tokens: tokens, OpenReads: opts.OpenReads, Logger: d.log}),
		console.Prefix: console.New(console.Options{Store: d.Store, Actions: d.operator, Serial: consoles,
			Planner: d.operator, Site: d.Site, Tokens: tokens, OpenReads: opts.OpenReads, SecureCookie: opts.API.TLS(), Logger: d.log}),
		"GET /metrics": d.metrics.Handler(),
	}
	d.apiSrv, err = newAPIServer(opts.API, extra, d.log, func(r pxehttp.Request) { d.metrics.ObserveHTTP(r.Path, r.Status, r.Bytes) })
	if err != nil {
		return nil, err
	}
	switch {
	case d.apiSrv != nil:
		// Their own listener serves them; boot traffic stays apart, and
		// the root here says where they are.
		extra = map[string]http.Handler{"GET /{$}": elsewhere(d.apiSrv.URL(opts.API.Addr))}
	case opts.API.Shared:
		extra["GET /{$}"] = http.RedirectHandler(console.Prefix, http.StatusSeeOther)
	default:
		extra = map[string]http.Handler{"GET /{$}": elsewhere("")}
	}
	d.sharedAPI = opts.API.Shared
	d.http, err = pxehttp.New(pxehttp.Config{
		Addr: listen, MoreAddrs: moreHTTP, Policy: d.policy, Leases: d.leases, IPXE: ipxeFiles,
		Files: filesRoot, Images: imageRoot, BaseURL: base, Logger: d.log,
		Agent:    agent,
		Extra:    extra,
		Security: (&securityEvents{store: d.Store, policy: d.policy, log: d.log}).record,
		Observe: func(r pxehttp.Request) {
			d.timeline.observe(r)
			d.metrics.ObserveHTTP(r.Path, r.Status, r.Bytes)
		},
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Serve runs every service until ctx ends or one fails; then it stops the
// rest. It does not close the store (Close does).
func (d *Daemon) Serve(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.policy.Run(ctx) })
	g.Go(func() error { return d.timeline.run(ctx) })
	g.Go(func() error { return d.metrics.Run(ctx) })
	if d.power != nil {
		g.Go(func() error { return d.power.Run(ctx) })
	}
	if d.consoleLogs {
		g.Go(func() error { return d.keepConsoles(ctx) })
	}
	g.Go(func() error {
		// Local commands lose their view of a running daemon without it,
		// but machines keep booting: not a reason to stop serving.
		if err := d.serveLocal(ctx, d.tokens); err != nil {
			d.log.Warn("local API socket not served; metal machines and events cannot read the store while serve runs", "err", err)
		}
		return nil
	})
	defer d.operator.stop()
	for _, srv := range d.dhcp {
		g.Go(func() error { return srv.Serve(ctx) })
	}
	for _, v6 := range d.v6 {
		g.Go(func() error { return v6.dhcp6.Serve(ctx) })
		g.Go(func() error { return v6.ra.Serve(ctx) })
	}
	g.Go(func() error { return d.tftp.Serve(ctx) })
	g.Go(func() error { return d.http.Serve(ctx) })
	consoleURL := "none (no --api-listen)"
	switch {
	case d.apiSrv != nil:
		g.Go(func() error { return d.apiSrv.Serve(ctx) })
		consoleURL = d.apiSrv.URL(d.apiSrv.cfg.Addr) + console.Prefix
	case d.sharedAPI:
		consoleURL = d.BaseURL + console.Prefix
		d.log.Warn("the console, API and metrics share the netboot listener (--api-on-boot-network): " +
			"API tokens and console cookies cross the boot network in clear, where any machine can read them; " +
			"give them a listener of their own with --api-listen (see SECURITY.md)")
	}
	s := d.Site()
	d.log.Info("metal serving", "site", s.Name, "machines", len(s.Machines),
		"http", d.BaseURL, "console", consoleURL, "state_dir", d.StateDir, "agent", d.Agent.Kernel != "")
	go d.signalReady(ctx)
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Ready is closed once Serve has every listener up (DHCP on each
// network, DHCPv6 and router advertisements on each IPv6 link, TFTP, HTTP, the API's own listener) and the boot policy follows
// the store: from then on a machine that boots gets its answer. metal
// serve tells systemd then (Type=notify).
func (d *Daemon) Ready() <-chan struct{} { return d.ready.Done() }

// signalReady closes Ready once every listener is up, unless ctx ends
// first (a listener that failed ends it).
func (d *Daemon) signalReady(ctx context.Context) {
	waits := []<-chan struct{}{d.policy.Synced(), d.tftp.Listening(), d.http.Listening()}
	for _, srv := range d.dhcp {
		waits = append(waits, srv.Listening())
	}
	for _, v6 := range d.v6 {
		waits = append(waits, v6.dhcp6.Listening(), v6.ra.Listening())
	}
	if d.apiSrv != nil {
		waits = append(waits, d.apiSrv.listening.Done())
	}
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return
		}
	}
	d.log.Info(ReadyMessage)
	d.ready.Close()
}

// ReadyMessage is what Serve logs once every listener is up.
const ReadyMessage = "metal ready: every listener is up"

// Site is the site the daemon serves now.
func (d *Daemon) Site() *site.Site {
	d.siteMu.RLock()
	defer d.siteMu.RUnlock()
	return d.site
}

// Synced is closed once the boot policy follows the store, so a boot
// intent written afterwards is what the next netboot gets.
func (d *Daemon) Synced() <-chan struct{} { return d.policy.Synced() }

// leaseStore is where a network's leases are kept. With etcd, several
// metal servers answer DHCP for one site, so every address is allocated
// through the store's transactions and none is given twice. With one
// server (file://), a lease file beside the store, whose writes are
// grouped across acknowledgements, keeps DHCP fast and just as durable.
func (d *Daemon) leaseStore(network string) dhcp.LeaseStore {
	if strings.HasPrefix(d.site.Settings.State, "etcd://") {
		return storeleases.NewInventoryLeases(d.Store)
	}
	return dhcp.NewFileStore(filepath.Join(d.StateDir, "leases-"+network+".json"))
}

// poolAddresses sums the pools of the networks served in dhcp mode.
func (d *Daemon) poolAddresses() int {
	n := 0
	for _, nw := range d.Site().Networks {
		if nw.Mode != site.ModeDHCP || !nw.PoolStart.IsValid() || !nw.PoolEnd.IsValid() || !nw.PoolStart.Is4() {
			continue
		}
		a, b := nw.PoolStart.As4(), nw.PoolEnd.As4()
		lo := int(a[0])<<24 | int(a[1])<<16 | int(a[2])<<8 | int(a[3])
		hi := int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		if hi >= lo {
			n += hi - lo + 1
		}
	}
	return n
}

// leasesInUse sums the leases every DHCP server holds now.
func (d *Daemon) leasesInUse() int {
	n := 0
	for _, srv := range d.dhcp {
		n += srv.Handler().LeasesInUse()
	}
	return n
}

// Close releases the store if the daemon opened it.
func (d *Daemon) Close() error {
	if d.ownStore && d.Store != nil {
		return d.Store.Close()
	}
	return nil
}

func dhcpSubnet(n *site.Network) dhcp.Subnet {
	var opts []dhcp.Option
	for _, o := range n.Options {
		opts = append(opts, dhcp.Option{Code: o.Code, Value: o.Value})
	}
	return dhcp.Subnet{
		CIDR: n.Subnet, Gateway: n.Gateway, DNS: n.DNS, Domain: n.Domain,
		PoolStart: n.PoolStart, PoolEnd: n.PoolEnd, LeaseTime: n.LeaseTime,
		Relays: relayAgents(n, false),
		NTP:    n.NTP, MTU: n.MTU, Routes: n.Routes, Options: opts,
	}
}

// interfaceAddr returns the interface's address inside subnet (IPv4 or
// IPv6, as subnet is): the address DHCP identifies itself with and
// machines reach TFTP and HTTP on. pin (listen's host) wins when the
// interface has it; else ifaddr.Choose picks by the addresses' flags and
// ages, so that an address added later in the subnet (a VIP, a privacy
// address) never moves metal. note says what was chosen and why, for
// the log.
func interfaceAddr(name string, subnet netip.Prefix, pin netip.Addr) (ip netip.Addr, note string, err error) {
	addrs, err := ifaddr.List(name)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("%w (is the network's interface setting right? `ip link` lists them)", err)
	}
	a, err := ifaddr.Choose(addrs, subnet, pin)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("interface %q has no usable address in %s; give it one (ip addr add ... dev %s)", name, subnet, name)
	}
	n := 0
	for _, b := range addrs {
		if subnet.Contains(b.Addr()) {
			n++
		}
	}
	switch {
	case a.Addr() == pin:
		note = "named by listen"
	case n > 1:
		note = fmt.Sprintf("chosen of %d in %s (to pin another, listen = \"[ADDRESS]:PORT\" or \"ADDRESS:PORT\")", n, subnet)
	default:
		note = "the only one in " + subnet.String()
	}
	return a.Addr(), fmt.Sprintf("%s [%s], %s", a.Prefix, a.FlagString(), note), nil
}

// listenHost is the address listen names, invalid when it names none.
func listenHost(listen string) netip.Addr {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(host)
	if a.IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
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

// elsewhere answers the boot listener's root when the console, API and
// metrics are not on it: a person who opens the boot URL in a browser
// learns where to go (url, empty when no TCP listener serves them).
func elsewhere(url string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if url == "" {
			fmt.Fprintf(w, "metal: this listener serves network boots only; the console, API and metrics are "+
				"not on the boot network (metal serve --api-listen ADDR gives them a listener).\n")
			return
		}
		fmt.Fprintf(w, "metal: this listener serves network boots.\nConsole: %s%s\nAPI:     %s%s\nMetrics: %s/metrics\n",
			url, console.Prefix, url, api.Prefix, url)
	})
}
