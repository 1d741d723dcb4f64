package daemon

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe"
)

// securityEvents records what the netboot servers refused as an attack on
// a machine's credentials (pxehttp.Config.Security) as security events in
// the machine's timeline: at most one per MAC every few seconds, so a host
// repeating the attempt cannot flood the event log.
type securityEvents struct {
	store  inventory.Store
	policy pxe.BootPolicy
	log    interface {
		Warn(msg string, args ...any)
	}

	mu   sync.Mutex
	last map[string]time.Time
}

const securityEventEvery = 10 * time.Second

func (s *securityEvents) record(mac net.HardwareAddr, client net.IP, what string) {
	s.log.Warn("security: "+what, "mac", mac.String(), "client", client.String())
	now := time.Now()
	s.mu.Lock()
	if s.last == nil || len(s.last) > 4096 {
		s.last = map[string]time.Time{}
	}
	if t, ok := s.last[string(mac)]; ok && now.Sub(t) < securityEventEvery {
		s.mu.Unlock()
		return
	}
	s.last[string(mac)] = now
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	name := ""
	if h, err := s.policy.Host(ctx, mac); err == nil {
		name = h.Name
	}
	if _, err := s.store.AppendEvent(ctx, inventory.Event{
		Time: now.UTC(), Machine: name, MAC: mac.String(), Kind: inventory.EventSecurity, Message: what,
	}); err != nil {
		s.log.Warn("append security event", "mac", mac.String(), "err", err)
	}
}
