package daemon

import (
	"context"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/agentapi"
)

// announceEvery is how often a metal serve sharing its store says where
// machines reach it; a serve not heard from for peerStale is taken for
// dead, and its URL no longer given to machines.
const (
	announceEvery = 30 * time.Second
	peerStale     = 4 * announceEvery
)

// announce records, until ctx ends, where machines reach this serve, so
// the others of an etcd site name it to the machines they install
// (ReadyAlso).
func (d *Daemon) announce(ctx context.Context) {
	tick := time.NewTicker(announceEvery)
	defer tick.Stop()
	for {
		if _, err := d.Store.PutServer(ctx, inventory.Server{Owner: d.owner, URL: d.BaseURL, Seen: time.Now().UTC()}); err != nil && ctx.Err() == nil {
			d.log.Warn("recording this metal serve in the state store", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// readyAlso is ReadyAlso when other metal serves may share the store.
func (d *Daemon) readyAlso() func(mac, secret string) []string {
	if !d.shared() {
		return nil
	}
	return d.ReadyAlso
}

// ReadyAlso is the phone-home of the machine with mac, with its install's
// secret, at the site's other metal serves heard from lately, the most
// recent first: the installed OS tries them when this serve, which wrote
// its install, does not answer (it died meanwhile; any serve of the site
// records the phone-home in the shared store).
func (d *Daemon) ReadyAlso(mac, secret string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	servers, err := d.Store.Servers(ctx)
	if err != nil {
		d.log.Warn("reading the site's other metal serves; the installed OS phones home to this one only", "mac", mac, "err", err)
		return nil
	}
	var out []string
	for _, s := range servers {
		if s.URL != d.BaseURL && time.Since(s.Seen) < peerStale {
			out = append(out, s.URL+agentapi.ReadyPath(mac, secret))
		}
	}
	return out
}
