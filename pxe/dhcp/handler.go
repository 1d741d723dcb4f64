package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/metal-dev/metal/internal/dhcpopt"
	"github.com/metal-dev/metal/pxe"
)

// From says where a request came from.
type From struct {
	Peer netip.AddrPort // the packet's source (a client, or a relay)
	// PXEPort: the packet arrived on port 4011, PXE boot server discovery
	// (proxy mode only).
	PXEPort bool
}

// Handler turns DHCP requests into replies. It keeps the lease table and
// asks the boot policy about MACs; it opens no sockets. It is safe for
// concurrent use.
type Handler struct {
	cfg      Config
	subnets  []*subnet
	local    *subnet // the subnet holding ServerIP: for clients not relayed
	serverID net.IP
	idOpt    dhcpv4.Option // option 54, serverID encoded once
	policy   pxe.BootPolicy
	leases   *leaseTable
	limit    *rateLimiter
	budget   *poolBudget
	log      *slog.Logger
	// refusedAt is when a refused relay was last logged as a warning;
	// the rest are logged at debug level, so a flood of forged relayed
	// packets does not flood the log.
	refusedMu sync.Mutex
	refusedAt time.Time
	now       func() time.Time
}

// Handler implements pxe.Leases, for the HTTP server to check who asks.
var _ pxe.Leases = (*Handler)(nil)

// Reservations is what a BootPolicy may also tell: the MAC of the machine
// declared with an address (pxe/storepolicy does). With it, the handler
// never gives a pool address reserved for one machine to another, even
// when the pool overlaps the reservations.
type Reservations interface {
	MACOf(ip netip.Addr) (net.HardwareAddr, bool)
}

// NewHandler checks cfg and returns a handler with an empty lease table;
// Load fills it from store. store may be nil (leases in memory only; proxy
// mode keeps none).
func NewHandler(cfg Config, policy pxe.BootPolicy, store LeaseStore, log *slog.Logger) (*Handler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("dhcp config: %w", err)
	}
	if policy == nil {
		return nil, errors.New("dhcp: no boot policy")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		cfg:      cfg,
		serverID: net.IP(cfg.ServerIP.AsSlice()),
		idOpt:    encoded(dhcpv4.OptServerIdentifier(net.IP(cfg.ServerIP.AsSlice()))),
		policy:   policy,
		limit:    newRateLimiter(cfg.RateLimit),
		budget:   newPoolBudget(cfg.RateLimit),
		log:      log,
		now:      time.Now,
	}
	var nets []netip.Prefix
	for _, s := range cfg.Subnets {
		sn := newSubnet(s, cfg)
		h.subnets = append(h.subnets, sn)
		nets = append(nets, sn.cidr)
		if s.CIDR.Contains(cfg.ServerIP) {
			h.local = sn
		}
	}
	var reservedFor func(netip.Addr) (net.HardwareAddr, bool)
	if r, ok := policy.(Reservations); ok {
		reservedFor = r.MACOf
	}
	h.leases = newLeaseTable(store, nets, reservedFor, log)
	if h.limit != nil {
		h.limit.holds = h.leases.has
	}
	return h, nil
}

// Load reads the lease table from the store given to NewHandler.
func (h *Handler) Load(ctx context.Context) error { return h.leases.load(ctx) }

// LeasedIP returns the address currently leased to mac, if any.
func (h *Handler) LeasedIP(mac net.HardwareAddr) (net.IP, bool) {
	k, ok := keyOf(mac)
	if !ok {
		return nil, false
	}
	ip, ok := h.leases.leasedIP(k, h.now())
	if !ok {
		return nil, false
	}
	return net.IP(ip.AsSlice()), true
}

// MACOf returns the MAC the address ip is currently leased to, if any.
func (h *Handler) MACOf(ip net.IP) (net.HardwareAddr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return nil, false
	}
	k, ok := h.leases.macOf(a, h.now())
	if !ok {
		return nil, false
	}
	return k.hw(), true
}

// LeasesInUse counts the acknowledged leases still valid, for metrics.
func (h *Handler) LeasesInUse() int { return h.leases.inUse(h.now()) }

// Handle answers one request. A nil reply with a nil error means the
// request is deliberately left unanswered (rate limited, an unknown MAC
// while ignoring those, a RELEASE, not a PXE client in proxy mode); an
// error means it could not be answered, and says why. An ACK is returned
// only once its lease is durable.
func (h *Handler) Handle(ctx context.Context, req *dhcpv4.DHCPv4, from From) (*dhcpv4.DHCPv4, error) {
	a, err := h.answer(ctx, req, from)
	if err != nil || !a.durable {
		return a.resp, err
	}
	if err := h.leases.persistThrough(ctx, a.gen); err != nil {
		return nil, err
	}
	a.sent()
	return a.resp, nil
}

// reply is an answer to a request. durable: it may go out only once
// generation gen of the lease table is saved (an ACK); sent is then
// called as it goes.
type reply struct {
	resp    *dhcpv4.DHCPv4
	durable bool
	gen     uint64
	sent    func()
}

// answer is Handle but for an ACK, which it returns at once with durable
// set: the caller sends it once the lease table is durable (Handle waits;
// the server lets the table's next Save send it).
func (h *Handler) answer(ctx context.Context, req *dhcpv4.DHCPv4, from From) (reply, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return reply{}, fmt.Errorf("opcode %v: not a request", req.OpCode)
	}
	k, ok := keyOf(req.ClientHWAddr)
	if !ok || req.HWType != iana.HWTypeEthernet {
		return reply{}, fmt.Errorf("hardware type %v with %d-byte address: only Ethernet is supported", req.HWType, len(req.ClientHWAddr))
	}
	mt := req.MessageType()
	if mt == dhcpv4.MessageTypeNone {
		return reply{}, errors.New("bootp request (no message type): not supported")
	}
	now := h.now()
	log := reqLog{l: h.log, req: req}
	if !h.limit.allow(k, now) {
		log.Debug("rate limited")
		return reply{}, nil
	}
	var resp *dhcpv4.DHCPv4
	var err error
	switch {
	case h.cfg.Mode == ModeProxy:
		resp, err = h.proxy(ctx, req, from, log)
	case from.PXEPort:
	case mt == dhcpv4.MessageTypeDiscover:
		resp, err = h.discover(ctx, req, from, k, now, log)
	case mt == dhcpv4.MessageTypeRequest:
		return h.request(ctx, req, from, k, now, log)
	case mt == dhcpv4.MessageTypeRelease:
		err = h.release(ctx, req, from, k, now, log)
	case mt == dhcpv4.MessageTypeDecline:
		err = h.decline(ctx, req, from, k, now, log)
	case mt == dhcpv4.MessageTypeInform:
		resp, err = h.inform(ctx, req, from, log)
	default:
		err = fmt.Errorf("message type %v: not one a server answers", mt)
	}
	return reply{resp: resp}, err
}

// lookup asks the policy about mac. known is false for ErrUnknownHost.
func (h *Handler) lookup(ctx context.Context, mac net.HardwareAddr) (host pxe.Host, known bool, err error) {
	host, err = h.policy.Host(ctx, mac)
	if errors.Is(err, pxe.ErrUnknownHost) {
		return pxe.Host{}, false, nil
	}
	if err != nil {
		return pxe.Host{}, false, fmt.Errorf("ask policy about %v: %w", mac, err)
	}
	return host, true, nil
}

// errRelayRefused: a relayed request from a relay its subnet does not
// declare. It is dropped unanswered.
var errRelayRefused = errors.New("relay not declared")

// subnetFor picks the subnet of a request: the relay's (giaddr), else
// the one holding the client's own address (a renewing client unicasts
// to us directly, even from behind a relay), else the local one. A
// relayed request must come from a relay its subnet declares, by giaddr
// and by source address (see Subnet.Relays); else errRelayRefused.
func (h *Handler) subnetFor(req *dhcpv4.DHCPv4, from From) (*subnet, error) {
	if gi, ok := addr4(req.GatewayIPAddr); ok {
		s := h.subnetContaining(gi)
		if s == nil {
			return nil, fmt.Errorf("%w: relay %v: no configured subnet contains it", errRelayRefused, gi)
		}
		if !slices.Contains(s.relays, gi) {
			return nil, fmt.Errorf("%w: relay %v is not one of subnet %v's relay agents", errRelayRefused, gi, s.cidr)
		}
		// Peer unset: a caller that is no socket (tests, a fuzzer); the
		// server always sets it.
		if src := from.Peer.Addr().Unmap(); from.Peer.IsValid() && src != gi && !slices.Contains(s.relays, src) {
			return nil, fmt.Errorf("%w: relay %v forwarded from %v, which is not one of subnet %v's relay agents", errRelayRefused, gi, src, s.cidr)
		}
		return s, nil
	}
	if ci, ok := addr4(req.ClientIPAddr); ok {
		if s := h.subnetContaining(ci); s != nil {
			return s, nil
		}
	}
	if h.local == nil {
		return nil, fmt.Errorf("local client, but no configured subnet contains the server address %v", h.cfg.ServerIP)
	}
	return h.local, nil
}

func (h *Handler) subnetContaining(a netip.Addr) *subnet {
	for _, s := range h.subnets {
		if s.cidr.Contains(a) {
			return s
		}
	}
	return nil
}

// reservation returns the host's reserved address, checked to be in s.
func reservation(host pxe.Host, s *subnet) (netip.Addr, error) {
	if host.IP == nil {
		return netip.Addr{}, nil
	}
	a, ok := netip.AddrFromSlice(host.IP.To4())
	if !ok {
		return netip.Addr{}, fmt.Errorf("host %s: reserved address %v is not IPv4", host.Name, host.IP)
	}
	if !s.cidr.Contains(a) {
		return netip.Addr{}, fmt.Errorf("host %s: reserved address %v is outside subnet %v it asks from", host.Name, a, s.cidr)
	}
	return a, nil
}

func hostname(host pxe.Host) string {
	if host.Hostname != "" {
		return host.Hostname
	}
	return host.Name
}

// located is what DISCOVER and REQUEST both ask first: who the client
// is, which subnet it asks from, and the address reserved for it there
// (invalid when none).
type located struct {
	host     pxe.Host
	known    bool
	s        *subnet
	reserved netip.Addr
}

// locate finds where req belongs. skip: left unanswered (an unknown MAC
// while ignoring those, a relay not declared).
func (h *Handler) locate(ctx context.Context, req *dhcpv4.DHCPv4, from From, log reqLog) (loc located, skip bool, err error) {
	loc.host, loc.known, err = h.lookup(ctx, req.ClientHWAddr)
	if err != nil {
		return located{}, false, err
	}
	if !loc.known && h.cfg.IgnoreUnknown {
		log.Debug("ignoring unknown MAC")
		return located{}, true, nil
	}
	if loc.s, err = h.subnetFor(req, from); err != nil {
		if errors.Is(err, errRelayRefused) {
			h.refused(log, from, err)
			return located{}, true, nil
		}
		return located{}, false, err
	}
	if p := loc.host.SwitchPort; p != nil {
		if err := atPort(req, *p); err != nil {
			// The machine's MAC, elsewhere: a moved cable, or someone
			// claiming the machine's identity. Either way, not its lease.
			h.refused(log, from, fmt.Errorf("machine %s: %w", loc.host.Name, err))
			return located{}, true, nil
		}
	}
	if loc.reserved, err = reservation(loc.host, loc.s); err != nil {
		return located{}, false, err
	}
	return loc, false, nil
}

// atPort checks that req was relayed from port p: by p's relay (giaddr;
// subnetFor has checked the relay is declared and sent it) with p's
// circuit-id in option 82.
func atPort(req *dhcpv4.DHCPv4, p pxe.SwitchPort) error {
	gi, _ := addr4(req.GatewayIPAddr)
	if gi != p.Relay {
		return fmt.Errorf("declared at relay %s circuit %q, asked through relay %v", p.Relay, p.CircuitID, gi)
	}
	circuit, _ := relayIDs(req)
	if circuit != p.CircuitID {
		return fmt.Errorf("declared at relay %s circuit %q, asked through circuit %q", p.Relay, p.CircuitID, circuit)
	}
	return nil
}

// relayIDs returns option 82's circuit-id and remote-id, if any.
func relayIDs(req *dhcpv4.DHCPv4) (circuit, remote string) {
	ri := req.RelayAgentInfo()
	if ri == nil {
		return "", ""
	}
	return string(ri.Get(dhcpv4.AgentCircuitIDSubOption)), string(ri.Get(dhcpv4.AgentRemoteIDSubOption))
}

// refused logs a relayed packet dropped: a warning now and then, else at
// debug level.
func (h *Handler) refused(log reqLog, from From, err error) {
	now := h.now()
	h.refusedMu.Lock()
	warn := now.Sub(h.refusedAt) >= refusedEvery
	if warn {
		h.refusedAt = now
	}
	h.refusedMu.Unlock()
	level := slog.LevelDebug
	if warn {
		level = slog.LevelWarn
	}
	log.log(level, "relayed packet dropped", []any{"from", from.Peer, "reason", err})
}

// refusedEvery is how often a dropped relayed packet is logged as a
// warning.
const refusedEvery = 10 * time.Second

// newBinding reports whether a MAC may get a pool address it holds no
// binding for: a declared machine always, an unknown MAC while the pool
// budget lasts (RateLimit.PoolBurst).
func (h *Handler) newBinding(loc located, k macKey, now time.Time, log reqLog) bool {
	if loc.known || loc.reserved.IsValid() || h.leases.has(k) || h.budget.take(now) {
		return true
	}
	log.Debug("pool budget spent: unknown MAC not answered")
	return false
}

func (h *Handler) discover(ctx context.Context, req *dhcpv4.DHCPv4, from From, k macKey, now time.Time, log reqLog) (*dhcpv4.DHCPv4, error) {
	loc, skip, err := h.locate(ctx, req, from, log)
	if skip || err != nil {
		return nil, err
	}
	if !h.newBinding(loc, k, now, log) {
		return nil, nil
	}
	host, s, reserved := loc.host, loc.s, loc.reserved
	requested, _ := addr4(req.RequestedIPAddress())
	ip, err := h.leases.offer(ctx, k, s, reserved, requested, now, now.Add(h.cfg.OfferHold))
	if err != nil {
		return nil, fmt.Errorf("no address to offer in %v: %w", s.cidr, err)
	}
	resp := h.newReply(req, dhcpv4.MessageTypeOffer)
	resp.YourIPAddr = net.IP(ip.AsSlice())
	h.addNetwork(resp, s, hostname(host), s.leaseTime)
	h.addBoot(ctx, resp, req, log)
	if log.enabled(slog.LevelDebug) {
		log.Debug("offer", "ip", ip, "host", host.Name, "boot", resp.BootFileNameOption())
	}
	return resp, nil
}

// request answers a REQUEST. Its ACK is durable: it may go out only once
// the lease is saved, so that after a crash no address is out that the
// restarted server does not know of.
func (h *Handler) request(ctx context.Context, req *dhcpv4.DHCPv4, from From, k macKey, now time.Time, log reqLog) (reply, error) {
	if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(h.serverID) {
		// Selecting another server's offer: free ours at once.
		h.leases.dropOffer(k)
		log.Debug("client chose another server", "server", sid)
		return reply{}, nil
	}
	ip, ok := addr4(req.RequestedIPAddress())
	if !ok {
		ip, ok = addr4(req.ClientIPAddr)
	}
	if !ok {
		return reply{}, errors.New("request names no address (neither option 50 nor ciaddr)")
	}
	loc, skip, err := h.locate(ctx, req, from, log)
	if skip || err != nil {
		return reply{}, err
	}
	host, s, reserved := loc.host, loc.s, loc.reserved
	if !s.cidr.Contains(ip) {
		log.Info("nak: address on the wrong network", "ip", ip, "subnet", s.cidr)
		return reply{resp: h.nak(req, "wrong network")}, nil
	}
	if !h.newBinding(loc, k, now, log) {
		return reply{}, nil
	}
	name := hostname(host)
	var at port
	if gi, ok := addr4(req.GatewayIPAddr); ok {
		at.relay = gi
		at.circuit, at.remote = relayIDs(req)
	}
	c, err := h.leases.commit(ctx, k, s, reserved, ip, name, at, now)
	expiry, renewed := c.expiry, c.renewed
	if errors.Is(err, ErrLeaseStore) {
		return reply{}, err // no answer: the client asks again, maybe of a server that can reach the store
	}
	if err != nil {
		log.Info("nak", "ip", ip, "reason", err)
		return reply{resp: h.nak(req, err.Error())}, nil
	}
	resp := h.newReply(req, dhcpv4.MessageTypeAck)
	resp.ClientIPAddr = req.ClientIPAddr
	resp.YourIPAddr = net.IP(ip.AsSlice())
	// A lease acknowledged as it stands: the client is told the time it
	// has left, never more than the table holds it for.
	h.addNetwork(resp, s, name, max(min(expiry.Sub(now).Truncate(time.Second), s.leaseTime), time.Second))
	h.addBoot(ctx, resp, req, log)
	sent := func() {
		// A new lease is news; a client renewing the one it holds (every
		// half lease time, and on every DORA of a netboot that already
		// had its address) is not, unless debugging: as Kea, which logs
		// allocations, not their reuse.
		level := slog.LevelInfo
		if renewed {
			level = slog.LevelDebug
		}
		if log.enabled(level) {
			args := []any{"ip", ip, "host", host.Name, "until", expiry.Format(time.RFC3339), "boot", resp.BootFileNameOption(), "renewed", renewed}
			if at.relay.IsValid() {
				args = append(args, "relay", at.relay, "circuit_id", at.circuit, "remote_id", at.remote)
			}
			log.log(level, "lease", args)
		}
	}
	return reply{resp: resp, durable: true, gen: c.gen, sent: sent}, nil
}

// heldBy says whether a RELEASE or DECLINE about ip may come from where it
// came: a client sends RELEASE unicast from the address it holds, and
// DECLINE before it configured the address, so from 0.0.0.0. A packet from
// any other source address is a host speaking for someone else's lease
// (the MAC in the packet proves nothing): it changes nothing. Relayed
// packets come from the relay, whose trust is the relay's business; a
// zero From (no socket) is not checked.
func heldBy(req *dhcpv4.DHCPv4, from From, ip netip.Addr, decline bool) bool {
	if !from.Peer.IsValid() {
		return true
	}
	if g, ok := addr4(req.GatewayIPAddr); ok && !g.IsUnspecified() {
		return true
	}
	src := from.Peer.Addr().Unmap()
	return src == ip || (decline && src.IsUnspecified())
}

func (h *Handler) release(ctx context.Context, req *dhcpv4.DHCPv4, from From, k macKey, now time.Time, log reqLog) error {
	ip, ok := addr4(req.ClientIPAddr)
	if !ok {
		return nil
	}
	if !heldBy(req, from, ip, false) {
		log.Warn("release ignored: it came from another address than the one released", "ip", ip, "source", from.Peer.Addr())
		return nil
	}
	if h.subnetContaining(ip) == nil {
		// Another network's address: its server's business, even in a
		// lease store we share.
		log.Debug("release of an address outside our subnets", "ip", ip)
		return nil
	}
	released, err := h.leases.release(ctx, k, ip, now)
	if err != nil {
		return err
	}
	if !released {
		log.Debug("release of an address not leased to this MAC", "ip", req.ClientIPAddr)
		return nil
	}
	log.Info("released", "ip", ip)
	return h.leases.persist(ctx)
}

func (h *Handler) decline(ctx context.Context, req *dhcpv4.DHCPv4, from From, k macKey, now time.Time, log reqLog) error {
	ip, ok := addr4(req.RequestedIPAddress())
	if !ok {
		return nil
	}
	if !heldBy(req, from, ip, true) {
		log.Warn("decline ignored: it came from a configured address other than the one declined", "ip", ip, "source", from.Peer.Addr())
		return nil
	}
	if h.subnetContaining(ip) == nil {
		log.Debug("decline of an address outside our subnets", "ip", ip)
		return nil
	}
	declined, err := h.leases.decline(ctx, k, ip, now.Add(h.cfg.DeclineTime))
	if err != nil {
		return err
	}
	if !declined {
		log.Debug("decline of an address not given to this MAC", "ip", req.RequestedIPAddress())
		return nil
	}
	log.Warn("address declined: something else on the network uses it", "ip", ip, "until", now.Add(h.cfg.DeclineTime).Format(time.RFC3339))
	return h.leases.persist(ctx)
}

func (h *Handler) inform(ctx context.Context, req *dhcpv4.DHCPv4, from From, log reqLog) (*dhcpv4.DHCPv4, error) {
	host, known, err := h.lookup(ctx, req.ClientHWAddr)
	if err != nil {
		return nil, err
	}
	if !known && h.cfg.IgnoreUnknown {
		return nil, nil
	}
	s, err := h.subnetFor(req, from)
	if errors.Is(err, errRelayRefused) {
		h.refused(log, from, err)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	resp := h.newReply(req, dhcpv4.MessageTypeAck)
	resp.ClientIPAddr = req.ClientIPAddr
	// An INFORM client configured its own address: no lease times.
	h.addNetwork(resp, s, hostname(host), 0)
	log.Debug("inform", "ip", req.ClientIPAddr)
	return resp, nil
}

// proxy answers PXE clients with boot information only: DISCOVERs on port
// 67 get a proxyDHCP OFFER, REQUESTs on port 4011 (boot server discovery,
// as UEFI PXE and iPXE send after a proxy offer) get an ACK. Everything
// else is the other DHCP server's business.
func (h *Handler) proxy(ctx context.Context, req *dhcpv4.DHCPv4, from From, log reqLog) (*dhcpv4.DHCPv4, error) {
	var mt dhcpv4.MessageType
	switch t := req.MessageType(); {
	case !from.PXEPort && t == dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case from.PXEPort && (t == dhcpv4.MessageTypeRequest || t == dhcpv4.MessageTypeInform):
		mt = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	if !classify(req).bootable() {
		return nil, nil
	}
	_, known, err := h.lookup(ctx, req.ClientHWAddr)
	if err != nil {
		return nil, err
	}
	if !known && h.cfg.IgnoreUnknown {
		log.Debug("ignoring unknown MAC")
		return nil, nil
	}
	resp := h.newReply(req, mt)
	if mt == dhcpv4.MessageTypeAck {
		resp.ClientIPAddr = req.ClientIPAddr
	}
	if !h.addBoot(ctx, resp, req, log) {
		return nil, nil
	}
	// A PXE ROM takes an offer without an address as proxyDHCP only when
	// it says "PXEClient", even from a UEFI HTTP or iPXE client.
	if resp.ClassIdentifier() == "" {
		resp.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	}
	log.Info("proxy boot", "boot", resp.BootFileNameOption(), "port4011", from.PXEPort)
	return resp, nil
}

// newReply starts a reply to req: header fields, relay and client
// identifier options echoed (RFC 3046, RFC 6842), our server identifier.
func (h *Handler) newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	resp := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		// Room for the options of a plain lease without growing; a hint
		// beyond 8 made the map the costliest allocation of a reply.
		Options: make(dhcpv4.Options, 8),
	}
	if resp.GatewayIPAddr == nil {
		resp.GatewayIPAddr = net.IPv4zero
	}
	resp.UpdateOption(dhcpv4.OptMessageType(mt))
	resp.UpdateOption(h.idOpt)
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.Options.Get(code); v != nil {
			resp.UpdateOption(dhcpv4.OptGeneric(code, v))
		}
	}
	return resp
}

func (h *Handler) nak(req *dhcpv4.DHCPv4, msg string) *dhcpv4.DHCPv4 {
	resp := h.newReply(req, dhcpv4.MessageTypeNak)
	resp.UpdateOption(dhcpv4.OptMessage(msg))
	if _, relayed := addr4(req.GatewayIPAddr); relayed {
		// RFC 2131 4.3.2: a relay must broadcast a NAK to the client.
		resp.SetBroadcast()
	}
	return resp
}

// addNetwork adds the subnet's options; lease times unless for INFORM.
func (h *Handler) addNetwork(resp *dhcpv4.DHCPv4, s *subnet, hostname string, lease time.Duration) {
	for _, o := range s.netOpts {
		resp.UpdateOption(o)
	}
	if hostname != "" {
		resp.UpdateOption(dhcpv4.OptHostName(hostname))
	}
	opts := s.leaseOpts
	if lease != s.leaseTime {
		opts = leaseOpts(lease)
	}
	if lease > 0 {
		for _, o := range opts {
			resp.UpdateOption(o)
		}
	}
}

// encoded is opt with its value encoded once, for options every reply of
// a subnet carries: adding it to a reply then allocates nothing.
func encoded(opt dhcpv4.Option) dhcpv4.Option {
	return dhcpv4.OptGeneric(opt.Code, opt.Value.ToBytes())
}

// pxeBypass is option 43 with PXE sub-option 6 (discovery control) = 8:
// "no boot server discovery, boot the file named in the offer". Without it
// BIOS PXE ROMs may wait for a boot server instead, and UEFI PXE (EDK2,
// OVMF) takes an offer with vendor class PXEClient and no option 43 for a
// BINL offer and asks port 4011 for its boot file, ignoring the one named.
var pxeBypass = []byte{6, 1, 8, 255}

// addBoot adds what the client should boot, if it netboots and its intent
// is to boot something; it reports whether it did.
func (h *Handler) addBoot(ctx context.Context, resp, req *dhcpv4.DHCPv4, log reqLog) bool {
	c := classify(req)
	if !c.bootable() {
		return false
	}
	intent, err := h.policy.Intent(ctx, req.ClientHWAddr)
	if err != nil {
		log.Warn("no boot intent: answering without a boot file", "err", err)
		return false
	}
	if intent.Action == pxe.ActionNone || intent.Action == "" {
		return false
	}
	var file string
	host, herr := h.policy.Host(ctx, req.ClientHWAddr)
	if herr == nil && host.Boot == pxe.BootHTTP && c.vendor == "PXEClient" && !c.ipxe {
		log.Info("http boot machine: no boot file for a PXE client (no TFTP)", "arch", c.arch)
		return false
	}
	if herr == nil && host.Boot == pxe.BootVirtualMedia {
		log.Info("virtual media machine: no boot file (it boots from the CD its BMC attaches)", "arch", c.arch)
		return false
	}
	if herr == nil && host.Boot == pxe.BootSecure {
		// Secure Boot: the signed chain only, never iPXE (unsigned, which
		// the firmware would refuse), and nothing to a BIOS client.
		switch {
		case c.ipxe:
		case c.vendor == "HTTPClient" || c.arch == pxe.ArchUEFIx64HTTP:
			// Debian's signed network GRUB has no HTTP client: loaded by
			// HTTP boot (shim fetches it), it finds no config and stops
			// at its prompt. No boot URL sends the firmware on to its
			// PXE boot option, where the chain runs over TFTP.
		case c.arch == pxe.ArchUEFIx64:
			file = h.cfg.BootFiles.SecureBoot
		}
		if file == "" {
			log.Info("secure boot machine: no signed boot file for this client", "arch", c.arch, "vendor", c.vendor, "ipxe", c.ipxe)
			return false
		}
	}
	switch {
	case file != "":
	case c.ipxe:
		// iPXE asks again once chainloaded; its script ends the loop.
		file = h.cfg.HTTPBaseURL + "/ipxe/" + req.ClientHWAddr.String()
	case c.vendor == "HTTPClient":
		file = h.cfg.BootFiles.HTTPBoot
	case c.arch == pxe.ArchBIOS:
		file = h.cfg.BootFiles.BIOS
	case c.arch == pxe.ArchUEFIx64:
		file = h.cfg.BootFiles.UEFI
	case c.arch == pxe.ArchUEFIx64HTTP:
		file = h.cfg.BootFiles.HTTPBoot
	case c.arch == pxe.ArchUEFIARM64:
		file = h.cfg.BootFiles.ARM64
	}
	if file == "" {
		log.Info("no boot file for this client architecture", "arch", c.arch, "vendor", c.vendor)
		return false
	}
	resp.ServerIPAddr = net.IP(h.cfg.TFTPServer.AsSlice())
	if len(file) < 128 {
		resp.BootFileName = file
	}
	resp.UpdateOption(dhcpv4.OptBootFileName(file))
	if c.vendor != "" {
		resp.UpdateOption(dhcpv4.OptClassIdentifier(c.vendor))
	}
	// In proxy mode UEFI gets no option 43 on purpose: it then asks port 4011,
	// where the proxy answers it alone.
	if c.vendor == "PXEClient" && (h.cfg.Mode != ModeProxy || c.arch == pxe.ArchBIOS || c.ipxe) {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeBypass))
	}
	if guid := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); guid != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid))
	}
	return true
}

// client is what a request says about the firmware sending it.
type client struct {
	arch   pxe.Arch
	vendor string // "PXEClient", "HTTPClient", or "" for anything else
	ipxe   bool
}

// bootable: a PXE ROM, a UEFI HTTP boot client, or iPXE. Anything else (an
// installed OS's DHCP client) gets an address and no boot file.
func (c client) bootable() bool { return c.vendor != "" || c.ipxe }

// optionIPXEEncap is iPXE's encapsulated options (175); iPXE sends it in
// every request.
const optionIPXEEncap = dhcpv4.GenericOptionCode(175)

func classify(req *dhcpv4.DHCPv4) client {
	var c client
	switch vc := req.ClassIdentifier(); {
	case strings.HasPrefix(vc, "PXEClient"):
		c.vendor = "PXEClient"
	case strings.HasPrefix(vc, "HTTPClient"):
		c.vendor = "HTTPClient"
	}
	c.arch = pxe.ArchUnknown
	if archs := req.ClientArch(); len(archs) > 0 {
		switch archs[0] {
		case iana.INTEL_X86PC:
			c.arch = pxe.ArchBIOS
		case iana.EFI_BC, iana.EFI_X86_64:
			c.arch = pxe.ArchUEFIx64
		case iana.EFI_X86_64_HTTP:
			c.arch = pxe.ArchUEFIx64HTTP
		case iana.EFI_ARM64:
			c.arch = pxe.ArchUEFIARM64
		}
	}
	if req.Options.Has(optionIPXEEncap) {
		c.ipxe = true
	} else if uc := req.Options.Get(dhcpv4.OptionUserClassInformation); uc != nil {
		// iPXE sends "iPXE" raw, not RFC 3004 encoded; accept both.
		if string(uc) == "iPXE" {
			c.ipxe = true
		}
		for _, s := range req.UserClass() {
			if s == "iPXE" {
				c.ipxe = true
			}
		}
	}
	return c
}

// addr4 returns ip as an IPv4 netip.Addr, and false for nil or 0.0.0.0.
func addr4(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}

// subnet is a Subnet prepared for the packet path.
type subnet struct {
	cidr               netip.Prefix
	mask               net.IPMask
	router             net.IP
	dns                []net.IP
	domain             string
	poolStart, poolEnd netip.Addr
	leaseTime          time.Duration
	relays             []netip.Addr
	// never handed out: network, broadcast and the addresses of servers
	excluded []netip.Addr
	// netOpts (mask, router, DNS, domain) and leaseOpts (lease time, T1,
	// T2) encoded once: every reply carries them.
	netOpts, leaseOpts []dhcpv4.Option
}

func newSubnet(s Subnet, cfg Config) *subnet {
	sn := &subnet{
		cidr:      s.CIDR,
		mask:      net.CIDRMask(s.CIDR.Bits(), 32),
		domain:    s.Domain,
		poolStart: s.PoolStart,
		poolEnd:   s.PoolEnd,
		leaseTime: s.LeaseTime,
		relays:    s.Relays,
	}
	if s.Gateway.IsValid() {
		sn.router = net.IP(s.Gateway.AsSlice())
	}
	for _, d := range s.DNS {
		sn.dns = append(sn.dns, net.IP(d.AsSlice()))
	}
	sn.excluded = append([]netip.Addr{s.CIDR.Addr(), lastAddr(s.CIDR), cfg.ServerIP, cfg.TFTPServer, s.Gateway}, s.DNS...)
	sn.netOpts = append(sn.netOpts, encoded(dhcpv4.OptSubnetMask(sn.mask)))
	if sn.router != nil {
		sn.netOpts = append(sn.netOpts, encoded(dhcpv4.OptRouter(sn.router)))
	}
	if len(sn.dns) > 0 {
		sn.netOpts = append(sn.netOpts, encoded(dhcpv4.OptDNS(sn.dns...)))
	}
	if sn.domain != "" {
		sn.netOpts = append(sn.netOpts, encoded(dhcpv4.OptDomainName(sn.domain)))
	}
	if len(s.NTP) > 0 {
		var ntp []net.IP
		for _, a := range s.NTP {
			ntp = append(ntp, net.IP(a.AsSlice()))
		}
		sn.netOpts = append(sn.netOpts, encoded(dhcpv4.OptNTPServers(ntp...)))
	}
	if s.MTU > 0 {
		sn.netOpts = append(sn.netOpts, dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{byte(s.MTU >> 8), byte(s.MTU)}))
	}
	if len(s.Routes) > 0 {
		routes := s.Routes
		if s.Gateway.IsValid() && !slices.ContainsFunc(routes, func(r dhcpopt.Route) bool { return r.Dest.Bits() == 0 }) {
			routes = append(slices.Clip(routes), dhcpopt.Route{Dest: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Via: s.Gateway})
		}
		sn.netOpts = append(sn.netOpts, dhcpv4.OptGeneric(dhcpv4.OptionClasslessStaticRoute, dhcpopt.EncodeRoutes(routes)))
	}
	for _, o := range s.Options {
		sn.netOpts = append(sn.netOpts, dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(o.Code), o.Value))
	}
	sn.leaseOpts = leaseOpts(sn.leaseTime)
	return sn
}

// leaseOpts are the options of a lease of d: its time, T1 and T2, in
// whole seconds, encoded at once (see encoded).
func leaseOpts(d time.Duration) []dhcpv4.Option {
	b := make([]byte, 12)
	binary.BigEndian.PutUint32(b[0:], uint32(d/time.Second))
	binary.BigEndian.PutUint32(b[4:], uint32(d/2/time.Second))
	binary.BigEndian.PutUint32(b[8:], uint32(d*7/8/time.Second))
	return []dhcpv4.Option{
		dhcpv4.OptGeneric(dhcpv4.OptionIPAddressLeaseTime, b[0:4:4]),
		dhcpv4.OptGeneric(dhcpv4.OptionRenewTimeValue, b[4:8:8]),
		dhcpv4.OptGeneric(dhcpv4.OptionRebindingTimeValue, b[8:12:12]),
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (s *subnet) hasPool() bool { return s.poolStart.IsValid() }

// inPool reports whether ip is a pool address that may be handed out.
func (s *subnet) inPool(ip netip.Addr) bool {
	if !s.hasPool() || !ip.IsValid() || ip.Less(s.poolStart) || s.poolEnd.Less(ip) {
		return false
	}
	for _, x := range s.excluded {
		if ip == x {
			return false
		}
	}
	return true
}

// nextInPool steps through the pool's range, wrapping at its end.
func (s *subnet) nextInPool(ip netip.Addr) netip.Addr {
	if ip == s.poolEnd {
		return s.poolStart
	}
	return ip.Next()
}

// reqLog logs about one request: its MAC, transaction ID and message type
// are added to a record only when one is written. (Logger.With formats
// them at once, which cost every packet its share of the CPU although
// most packets log nothing at the usual levels.)
type reqLog struct {
	l   *slog.Logger
	req *dhcpv4.DHCPv4
}

func (r reqLog) enabled(level slog.Level) bool { return r.l.Enabled(context.Background(), level) }

func (r reqLog) log(level slog.Level, msg string, args []any) {
	if !r.enabled(level) {
		return
	}
	attrs := append([]any{"mac", r.req.ClientHWAddr.String(), "xid", r.req.TransactionID.String(), "msg", r.req.MessageType().String()}, args...)
	r.l.Log(context.Background(), level, msg, attrs...)
}

func (r reqLog) Debug(msg string, args ...any) { r.log(slog.LevelDebug, msg, args) }
func (r reqLog) Info(msg string, args ...any)  { r.log(slog.LevelInfo, msg, args) }
func (r reqLog) Warn(msg string, args ...any)  { r.log(slog.LevelWarn, msg, args) }
