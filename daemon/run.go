package daemon

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/metal-dev/metal/internal/gcheadroom"
	"github.com/metal-dev/metal/inventory/backup"
)

// gcHeadroom is the heap growth metal serve allows between garbage
// collections (internal/gcheadroom): at most that much more memory.
const gcHeadroom = 64 << 20

// Run is `metal serve`: it prepares the site's services (New), serves them
// and supervises them under systemd until ctx ends or one fails. primary,
// when set, is the opened primary of a disaster-recovery pair (its Open
// checked the fence): Run renews its lease before the first packet is
// answered, ships snapshots and heartbeats beside the services, and stops
// them all once the lease runs out; Run closes it.
func Run(ctx context.Context, opts Options, primary *backup.Primary) error {
	d, err := New(ctx, opts)
	if err != nil {
		if primary != nil {
			primary.Remote.Close()
		}
		return err
	}
	defer d.Close()
	if primary != nil {
		// Open's beat began a lease that New (which builds the agent's
		// initramfs, seconds or minutes under load) may have outlived:
		// renewed here, nothing is ever served outside a confirmed lease.
		if err := primary.Beat(ctx); err != nil {
			primary.Remote.Close()
			return fmt.Errorf("heartbeat before serving: %w", err)
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Serve(ctx) })
	g.Go(func() error { d.Supervise(ctx); return nil })
	if d.shared() {
		g.Go(func() error { d.announce(ctx); return nil })
		g.Go(func() error { d.takeOverApplies(ctx); return nil })
	}
	// A few MiB live and a few KiB allocated per request: without a
	// floor the collector would run many times a second under a boot
	// storm, for more CPU than the requests themselves.
	g.Go(func() error { gcheadroom.Keep(ctx, gcHeadroom, time.Second); return nil })
	if primary != nil {
		g.Go(func() error { return primary.Serve(ctx, d.Store) })
	}
	return g.Wait()
}
