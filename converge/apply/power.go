package apply

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// PowerPoller keeps each declared machine's observed power (Machine.Power
// and PowerAt) current by asking its BMC, so `metal machines`, the console
// and the next plan see a machine someone switched off by hand. One slow or
// broken BMC only leaves its own machine's power stale.
type PowerPoller struct {
	Site *site.Site
	// Current, when set, is asked for the site at each round instead of
	// Site: a daemon that reloads its site file polls what it now declares.
	Current func() *site.Site
	Store   inventory.Store
	BMC     BMCFunc
	// Every is the time between rounds (default 60 s); Timeout bounds one
	// BMC's answer (default 10 s); Concurrency how many BMCs are asked at
	// once (default 16).
	Every       time.Duration
	Timeout     time.Duration
	Concurrency int
	Logger      *slog.Logger
}

// Run polls until ctx ends.
func (p *PowerPoller) Run(ctx context.Context) error {
	if p.Every <= 0 {
		p.Every = time.Minute
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	for {
		p.Round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.Every):
		}
	}
}

// Round asks every declared machine's BMC once and records what changed.
func (p *PowerPoller) Round(ctx context.Context) {
	timeout, conc := p.Timeout, p.Concurrency
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if conc <= 0 {
		conc = 16
	}
	var g errgroup.Group
	g.SetLimit(conc)
	s := p.Site
	if p.Current != nil {
		s = p.Current()
	}
	for _, decl := range s.Machines {
		if decl.BMC == nil {
			continue
		}
		g.Go(func() error {
			p.poll(ctx, decl, timeout)
			return nil
		})
	}
	_ = g.Wait()
}

func (p *PowerPoller) poll(ctx context.Context, decl *site.Machine, timeout time.Duration) {
	rec, err := p.Store.Machine(ctx, decl.Name)
	if err != nil {
		return // not synced yet
	}
	b, err := p.BMC(rec, decl)
	if err != nil || b == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	on, err := b.PowerState(cctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			p.Logger.Debug("power poll", "machine", decl.Name, "err", err)
		}
		return
	}
	now := inventory.PowerOff
	if on {
		now = inventory.PowerOn
	}
	if rec.Power == now {
		return // unchanged: no write, no watch event
	}
	_, err = inventory.UpdateMachine(ctx, p.Store, decl.Name, func(m *inventory.Machine) error {
		m.Power, m.PowerAt = now, time.Now().UTC()
		return nil
	})
	if err != nil && ctx.Err() == nil {
		p.Logger.Warn("record observed power", "machine", decl.Name, "err", err)
	}
}
