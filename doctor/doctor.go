// Package doctor preflights a site on this host: before `metal serve` or
// `metal apply` touch anything, it checks what they will need — the boot
// networks' interfaces, the ports the servers bind, the iPXE binaries, the
// images' local files, each BMC, the state store — and says for each thing
// that is wrong what to do about it.
//
// Checks are data (Check); the command line renders them. Every check is
// read-only towards the things it checks, except that it may briefly bind a
// port, open the state store and write a probe file in the state directory,
// exactly as `metal serve` would.
package doctor

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/metal-dev/metal/site"
)

// Status is the outcome of one check.
type Status string

// Statuses, from good to bad. Warn is something that works but deserves a
// look (no carrier yet, little free space); Skip is a check that does not
// apply here (a remote file, a network reached through relays).
const (
	OK   Status = "ok"
	Skip Status = "skip"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Kinds of checks, in the order they are reported.
const (
	KindInterface = "interface"
	KindPort      = "port"
	KindIPXE      = "ipxe"
	KindImage     = "image"
	KindBMC       = "bmc"
	KindState     = "state"
	KindAgent     = "agent"
)

// Check is the result of one check.
type Check struct {
	// Kind groups checks (KindInterface, KindPort, ...).
	Kind string `json:"kind"`
	// Subject names what was checked: a network, "67/udp", a file, a machine.
	Subject string `json:"subject"`
	Status  Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do; set when Status is Fail or Warn.
	Fix string `json:"fix,omitempty"`
}

// Options say which site to check and how it will be served.
type Options struct {
	Site *site.Site
	// SitePath is the site file; a running `metal serve` of the same file
	// holding a port or the store is reported as fine, not as a conflict.
	SitePath string
	// StateDir is the directory for leases and staged files, as
	// `metal serve --state-dir` (default: beside a file:// store).
	StateDir string
	// Listen is the HTTP listen address (default: the site's listen).
	Listen string
	// TFTPAddr is the TFTP listen address (default ":69").
	TFTPAddr string
	// BMCTimeout bounds the status check of one BMC (default 10s).
	BMCTimeout time.Duration
	// Concurrency is how many BMCs are checked at once (default 16).
	Concurrency int
	Logger      *slog.Logger
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TFTPAddr == "" {
		o.TFTPAddr = ":69"
	}
	if o.Listen == "" {
		o.Listen = o.Site.Settings.Listen
	}
	if o.BMCTimeout <= 0 {
		o.BMCTimeout = 10 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
}

// Run runs every check and returns the results in a stable order: by kind,
// then as the site declares things. Slow checks (BMCs, image checksums) run
// concurrently; a check never fails Run itself.
func Run(ctx context.Context, opts Options) []Check {
	opts.defaults()
	// Absolute paths, so every detail names files unambiguously.
	siteDir := filepath.Dir(opts.SitePath)
	if abs, err := filepath.Abs(siteDir); err == nil {
		siteDir = abs
	}
	self := selfRef{path: opts.SitePath}
	groups := []func() []Check{
		func() []Check { return checkInterfaces(opts.Site) },
		func() []Check { return checkPorts(opts, self) },
		func() []Check { return checkIPXE(opts.Site) },
		func() []Check { return checkImages(ctx, opts.Site, siteDir, stateDir(opts, siteDir)) },
		func() []Check { return checkBMCs(ctx, opts) },
		func() []Check { return checkHardware(ctx, opts) },
		func() []Check { return checkState(ctx, opts, siteDir, self) },
		func() []Check { return checkAgent(opts.Site, stateDir(opts, siteDir)) },
	}
	results := make([][]Check, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = g()
		}()
	}
	wg.Wait()
	var out []Check
	for _, r := range results {
		out = append(out, r...)
	}
	return out
}

// Failed reports whether any check failed.
func Failed(checks []Check) bool {
	for _, c := range checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

// selfRef recognises a `metal serve` of the site being checked.
type selfRef struct{ path string }

// isSite reports whether p (relative to dir) names the same file as the
// site being checked.
func (s selfRef) isSite(dir, p string) bool {
	if s.path == "" {
		return false
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	a, err := os.Stat(p)
	if err != nil {
		return false
	}
	b, err := os.Stat(s.path)
	return err == nil && os.SameFile(a, b)
}
