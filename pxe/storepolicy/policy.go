// Package storepolicy answers the netboot servers' questions (pxe.BootPolicy)
// from the inventory store: which machine a MAC is, and the boot intent the
// converge engine wrote for it. It keeps every machine in memory, kept
// current by a watch on the store, so a DHCP packet never waits on a disk or
// on etcd, and the servers keep answering from what was last committed if
// the store becomes unreachable.
package storepolicy

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe"
)

// Options are the policy's settings beyond the store.
type Options struct {
	// Unknown is what a MAC the store does not know boots: the discovery
	// agent (Action discover) or nothing (Action none, the default).
	Unknown pxe.Intent
	// TokenKey signs per-machine script tokens (pxe.Token); empty
	// disables them, and scripts are served to leased addresses only.
	TokenKey []byte
	// Logger receives watch errors and reloads; default slog.Default().
	Logger *slog.Logger
	// RetryEvery is how long to wait before watching again after the
	// watch failed (default 2 s).
	RetryEvery time.Duration
}

// Policy is a pxe.BootPolicy over an inventory.Store.
type Policy struct {
	store inventory.Store
	opts  Options
	log   *slog.Logger

	mu     sync.RWMutex
	byMAC  map[string]entry
	byName map[string]string     // name → MAC, for deletions (which carry no MAC)
	byIP   map[netip.Addr]string // declared address → MAC
	rev    int64
	// macsChanged is closed, and replaced, when a machine is added,
	// removed or gets another MAC (DeclaredMACs).
	macsChanged chan struct{}
	synced      chan struct{}
	once        sync.Once
}

// entry is a machine as the policy answers for it.
type entry struct {
	m *inventory.Machine
	// intent is what Intent answers for the machine, computed when the
	// machine is indexed (its token is an HMAC of its MAC; its initrds a
	// copy): a record is never changed, only replaced, so neither is
	// computed again per DHCP packet or script request.
	intent pxe.Intent
}

// New loads every machine from store. Run must be running for the policy
// to follow later changes.
func New(ctx context.Context, store inventory.Store, opts Options) (*Policy, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RetryEvery <= 0 {
		opts.RetryEvery = 2 * time.Second
	}
	if opts.Unknown.Action == "" {
		opts.Unknown.Action = pxe.ActionNone
	}
	p := &Policy{store: store, opts: opts, log: opts.Logger.With("component", "boot-policy"),
		macsChanged: make(chan struct{}), synced: make(chan struct{})}
	if err := p.reload(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// reload replaces the cache with the store's machines.
func (p *Policy) reload(ctx context.Context) error {
	ms, rev, err := p.store.Machines(ctx)
	if err != nil {
		return fmt.Errorf("boot policy: load machines: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byMAC = make(map[string]entry, len(ms))
	p.byName = make(map[string]string, len(ms))
	p.byIP = make(map[netip.Addr]string, len(ms))
	for i := range ms {
		p.put(&ms[i])
	}
	p.rev = rev
	p.macsMoved()
	return nil
}

// Run follows the store's machine changes until ctx ends. A failed watch
// (etcd compaction, a lost connection) reloads everything and watches
// again; meanwhile the policy answers from what it has.
func (p *Policy) Run(ctx context.Context) error {
	for {
		err := p.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		p.log.Warn("watching the store failed; reloading", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.opts.RetryEvery):
		}
		if err := p.reload(ctx); err != nil {
			p.log.Warn("reload failed; answering from the last known machines", "err", err)
		}
	}
}

func (p *Policy) follow(ctx context.Context) error {
	p.mu.RLock()
	from := p.rev + 1
	p.mu.RUnlock()
	ch, err := p.store.Watch(ctx, inventory.WatchOptions{Kinds: []inventory.Kind{inventory.KindMachine}, FromRevision: from})
	if err != nil {
		return err
	}
	p.once.Do(func() { close(p.synced) })
	for c := range ch {
		if c.Err != nil {
			return c.Err
		}
		if c.Machine != nil {
			p.apply(c)
		}
	}
	return ctx.Err()
}

func (p *Policy) apply(c inventory.Change) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.Revision > p.rev {
		p.rev = c.Revision
	}
	m := c.Machine
	old, had := p.byName[m.Name]
	if had {
		if prev, ok := p.byMAC[old]; ok && p.byIP[prev.m.Identity.IP] == old {
			delete(p.byIP, prev.m.Identity.IP)
		}
		delete(p.byMAC, old)
		delete(p.byName, m.Name)
	}
	if c.Deleted {
		if had {
			p.macsMoved()
		}
		return
	}
	cp := *m
	p.put(&cp)
	if !had || old != m.MAC {
		p.macsMoved()
	}
}

// macsMoved tells DeclaredMACs's callers the MACs changed; p.mu is held.
func (p *Policy) macsMoved() {
	close(p.macsChanged)
	p.macsChanged = make(chan struct{})
}

// DeclaredMACs returns the MACs of the machines Host knows, and a channel
// closed once a machine is added, removed or gets another MAC: the DHCP
// server has the kernel tell their packets apart from a flood's
// (dhcp.DeclaredLister).
func (p *Policy) DeclaredMACs() ([]net.HardwareAddr, <-chan struct{}) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	macs := make([]net.HardwareAddr, 0, len(p.byMAC))
	for mac := range p.byMAC {
		if hw, err := net.ParseMAC(mac); err == nil {
			macs = append(macs, hw)
		}
	}
	return macs, p.macsChanged
}

// put indexes m; p.mu is held.
func (p *Policy) put(m *inventory.Machine) {
	var token string
	if hw, err := net.ParseMAC(m.MAC); err == nil {
		token = pxe.Token(p.opts.TokenKey, hw)
	}
	p.byMAC[m.MAC] = entry{m: m, intent: intentOf(m, token, p.opts.Unknown)}
	p.byName[m.Name] = m.MAC
	if m.Identity.IP.IsValid() {
		p.byIP[m.Identity.IP] = m.MAC
	}
}

// Synced is closed once Run watches the store: from then on a write to the
// store is seen by the policy shortly after it commits.
func (p *Policy) Synced() <-chan struct{} { return p.synced }

// machine looks mac up by its text form, built on the stack: the map
// index of a converted byte slice does not allocate, where mac.String()
// did on every DHCP packet and script request.
func (p *Policy) machine(mac net.HardwareAddr) (entry, bool) {
	var buf [3 * 20]byte
	key := appendMAC(buf[:0], mac)
	p.mu.RLock()
	e, ok := p.byMAC[string(key)]
	p.mu.RUnlock()
	return e, ok
}

// appendMAC appends mac as net.HardwareAddr.String writes it.
func appendMAC(b []byte, mac net.HardwareAddr) []byte {
	const hex = "0123456789abcdef"
	for i, c := range mac {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[c>>4], hex[c&0xf])
	}
	return b
}

// Host implements pxe.BootPolicy. Machines the agent discovered are known
// to the store but have no address of their own: they take one from the
// pool like any unknown MAC.
func (p *Policy) Host(_ context.Context, mac net.HardwareAddr) (pxe.Host, error) {
	e, ok := p.machine(mac)
	if !ok {
		return pxe.Host{}, pxe.ErrUnknownHost
	}
	m := e.m
	h := pxe.Host{Name: m.Name, MAC: mac, Hostname: m.Identity.Hostname, Network: m.Identity.Network,
		Boot: pxe.BootPath(m.BootPath())}
	if m.Identity.IP6.IsValid() {
		h.IP6 = m.Identity.IP6.AsSlice()
	}
	if m.Identity.IP.IsValid() {
		h.IP = net.IP(m.Identity.IP.AsSlice())
	}
	if m.Identity.SwitchPortRelay.IsValid() {
		h.SwitchPort = &pxe.SwitchPort{Relay: m.Identity.SwitchPortRelay, CircuitID: m.Identity.SwitchPortCircuit}
	}
	return h, nil
}

// Intent implements pxe.BootPolicy.
func (p *Policy) Intent(_ context.Context, mac net.HardwareAddr) (pxe.Intent, error) {
	e, ok := p.machine(mac)
	if !ok {
		return p.opts.Unknown, nil
	}
	return e.intent, nil
}

// NamedIntent implements pxe.NamedIntents: Intent and Host's Name in one
// lookup.
func (p *Policy) NamedIntent(_ context.Context, mac net.HardwareAddr) (pxe.Intent, string, error) {
	e, ok := p.machine(mac)
	if !ok {
		return p.opts.Unknown, "", nil
	}
	return e.intent, e.m.Name, nil
}

// intentOf is what machine m boots: token is its MAC's script token,
// unknown what an unknown MAC boots.
func intentOf(m *inventory.Machine, token string, unknown pxe.Intent) pxe.Intent {
	in := m.Intent
	if in.Action == "" {
		// A machine the engine has not touched yet: no netboot, so its
		// firmware goes on to its disk.
		if m.State == inventory.StateDiscovered {
			return unknown
		}
		return pxe.Intent{Action: pxe.ActionNone, Token: token}
	}
	out := pxe.Intent{
		Action:  pxe.Action(in.Action),
		Kernel:  in.Kernel,
		Initrd:  append([]string(nil), in.Initrds...),
		Cmdline: in.Cmdline,
		Token:   cmp.Or(in.Token, token),
	}
	if t := in.Task; t != nil && t.Secret != "" {
		out.AgentSecret = t.Secret
		out.Spent = m.Agent != nil && m.Agent.TaskID == t.ID
	}
	return out
}

// Machine returns the record of the machine with MAC mac as the policy
// last saw it in the store, so that what follows a netboot (the daemon's
// boot timeline) needs no store read and decode per request. The record
// is shared and never changed (a change in the store replaces it): the
// caller must not modify it.
func (p *Policy) Machine(mac net.HardwareAddr) (*inventory.Machine, bool) {
	e, ok := p.machine(mac)
	return e.m, ok
}

// MACOf returns the MAC of the machine declared with ip, for callers that
// see an address before they see a lease.
func (p *Policy) MACOf(ip netip.Addr) (net.HardwareAddr, bool) {
	p.mu.RLock()
	mac, ok := p.byIP[ip]
	p.mu.RUnlock()
	if !ok {
		return nil, false
	}
	hw, err := net.ParseMAC(mac)
	return hw, err == nil
}
