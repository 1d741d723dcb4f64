// Package ra sends IPv6 router advertisements on a provisioning link where
// metal is the router of record: the link's prefix as on-link (so machines
// reach metal's address directly) and the managed flag (so their firmware
// and iPXE take their address, and the boot URL, from metal's DHCPv6
// server). It answers router solicitations at once and advertises
// periodically, over github.com/mdlayher/ndp.
package ra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/metal-dev/metal/internal/latch"
)

// Config says what to advertise where.
type Config struct {
	Interface string
	// Prefix is the link's on-link prefix (a /64).
	Prefix netip.Prefix
	// RouterLifetime is how long hosts may use metal as their default
	// router; zero advertises the prefix only (metal is no router).
	RouterLifetime time.Duration
	// Interval between unsolicited advertisements (default 10 s; RFC
	// 4861's MaxRtrAdvInterval may be as low as 4 s).
	Interval time.Duration
	Logger   *slog.Logger
}

// Server advertises Config's prefix on its interface.
type Server struct {
	cfg Config
	log *slog.Logger
	// listening is closed once the first advertisement went out
	// (Listening).
	listening latch.Latch
}

// New checks cfg.
func New(cfg Config) (*Server, error) {
	if !cfg.Prefix.IsValid() || !cfg.Prefix.Addr().Is6() || cfg.Prefix.Addr().Is4In6() {
		return nil, fmt.Errorf("ra: prefix %s: want an IPv6 prefix", cfg.Prefix)
	}
	if cfg.Interface == "" {
		return nil, errors.New("ra: no interface")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log.With("interface", cfg.Interface)}, nil
}

// Listening is closed once Serve advertises.
func (s *Server) Listening() <-chan struct{} { return s.listening.Done() }

// Serve advertises until ctx ends. The interface's link-local address may
// still be tentative (duplicate address detection) when Serve starts: it
// waits for it.
func (s *Server) Serve(ctx context.Context) error {
	ifi, err := net.InterfaceByName(s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("ra: %w", err)
	}
	var c *ndp.Conn
	for {
		c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer c.Close()
	// Routers listen on all-routers for solicitations.
	if err := c.JoinGroup(netip.MustParseAddr("ff02::2")); err != nil {
		return fmt.Errorf("ra: join all-routers: %w", err)
	}
	ra := &ndp.RouterAdvertisement{
		CurrentHopLimit:      64,
		ManagedConfiguration: true,
		OtherConfiguration:   true,
		RouterLifetime:       s.cfg.RouterLifetime,
		Options: []ndp.Option{
			&ndp.PrefixInformation{
				PrefixLength: uint8(s.cfg.Prefix.Bits()), OnLink: true,
				// Addresses come from DHCPv6 reservations, not SLAAC.
				AutonomousAddressConfiguration: false,
				ValidLifetime:                  24 * time.Hour, PreferredLifetime: 4 * time.Hour,
				Prefix: s.cfg.Prefix.Masked().Addr(),
			},
			&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr},
		},
	}
	allNodes := netip.IPv6LinkLocalAllNodes()
	send := func(why string) {
		if err := c.WriteTo(ra, nil, allNodes); err != nil {
			s.log.Warn("router advertisement", "err", err)
			return
		}
		s.log.Debug("router advertisement", "why", why, "prefix", s.cfg.Prefix.String())
	}

	solicited := make(chan struct{}, 1)
	go func() {
		for {
			m, _, from, err := c.ReadFrom()
			if err != nil {
				return // closed
			}
			if _, ok := m.(*ndp.RouterSolicitation); ok {
				s.log.Debug("router solicitation", "from", from.String())
				select {
				case solicited <- struct{}{}:
				default:
				}
			}
		}
	}()
	s.log.Info("advertising", "prefix", s.cfg.Prefix.String(), "router_lifetime", s.cfg.RouterLifetime)
	send("start")
	s.listening.Close()
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			send("periodic")
		case <-solicited:
			send("solicited")
		}
	}
}
