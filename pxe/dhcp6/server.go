// Package dhcp6 is metal's DHCPv6 server for IPv6 provisioning links: a
// machine's reserved address (IA_NA) and, while its boot intent says to
// netboot, the boot file URL (option 59, RFC 5970) its UEFI firmware or
// iPXE asks for. It answers on one interface, over insomniacslk/dhcp's
// dhcpv6 and server6, and asks pxe.BootPolicy what to answer, as the
// DHCPv4 server does. Router advertisements (pxe/ra) tell machines to ask.
//
//   - UEFI HTTP boot (vendor class "HTTPClient", arch 16): ipxe.efi's
//     HTTP URL, with the vendor class echoed (EDK2 takes only offers that
//     say HTTPClient for an HTTP boot);
//   - UEFI PXE over IPv6 (arch 7): ipxe.efi's tftp:// URL;
//   - iPXE (user class "iPXE"): its per-machine script's URL.
//
// Machines are known by MAC: from the client's DUID when it carries one
// (DUID-LL, DUID-LLT), or the client link-layer address a relay adds
// (option 79), else from the EUI-64 of its link-local address (firmware
// and iPXE both form theirs from the MAC).
//
// Requests relayed from other links (Relay-Forward, RFC 8415 §19) are
// answered only from a declared relay agent, for the link its
// link-address lies in, and only with a reservation on that link; the
// Relay-Reply carries the relay's interface-id back.
package dhcp6

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/server6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/metal-dev/metal/internal/latch"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/bootfiles"
)

// Config is one DHCPv6 server.
type Config struct {
	Interface string
	// ServerIP is metal's address on the link, in the TFTP URLs.
	ServerIP netip.Addr
	// HTTPBaseURL is metal's HTTP server as machines reach it over IPv6
	// ("http://[2001:db8::1]:8080").
	HTTPBaseURL string
	// DNS servers (option 23), if any.
	DNS []netip.Addr
	// Lifetime of an address (valid; preferred is half of it). Default 1 h.
	Lifetime time.Duration
	// Relayed are the links behind DHCPv6 relays that this server
	// answers for.
	Relayed []RelayedLink
	Logger  *slog.Logger
}

// RelayedLink is a link whose machines' requests reach metal through
// DHCPv6 relays.
type RelayedLink struct {
	// Prefix is the link's: a relay's link-address (an address of its
	// own on the machine's link) lies in it, and so must a machine's
	// reservation.
	Prefix netip.Prefix
	// Agents are the relays' addresses that forward to metal. Relayed
	// requests from anything else are ignored.
	Agents []netip.Addr
}

// Server answers DHCPv6 on Config.Interface.
type Server struct {
	cfg    Config
	policy pxe.BootPolicy
	log    *slog.Logger
	leases *leases
	// listening is closed once the server's socket is bound (Listening).
	listening latch.Latch
}

// New checks cfg.
func New(cfg Config, policy pxe.BootPolicy) (*Server, error) {
	if cfg.Interface == "" {
		return nil, errors.New("dhcp6: no interface")
	}
	if !cfg.ServerIP.Is6() || cfg.ServerIP.Is4In6() {
		return nil, fmt.Errorf("dhcp6: server address %s: want an IPv6 address", cfg.ServerIP)
	}
	if !strings.HasPrefix(cfg.HTTPBaseURL, "http://[") {
		return nil, fmt.Errorf("dhcp6: HTTP base URL %q: want http://[IPv6]:PORT", cfg.HTTPBaseURL)
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = time.Hour
	}
	for _, l := range cfg.Relayed {
		if !l.Prefix.Addr().Is6() || l.Prefix.Addr().Is4In6() || len(l.Agents) == 0 {
			return nil, fmt.Errorf("dhcp6: relayed link %s: want an IPv6 prefix and its relay agents", l.Prefix)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, policy: policy, log: log.With("interface", cfg.Interface), leases: &leases{byMAC: map[string]netip.Addr{}}}, nil
}

// Serve answers until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	ifi, err := net.InterfaceByName(s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("dhcp6: %w", err)
	}
	duid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: ifi.HardwareAddr}
	srv, err := server6.NewServer(s.cfg.Interface, nil, func(conn net.PacketConn, peer net.Addr, m dhcpv6.DHCPv6) {
		reply := s.Answer(ctx, duid, peer, m)
		if reply == nil {
			return
		}
		if _, err := conn.WriteTo(reply.ToBytes(), peer); err != nil {
			s.log.Warn("dhcp6 send", "peer", peer.String(), "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("dhcp6: listen on %s: %w", s.cfg.Interface, err)
	}
	s.listening.Close()
	s.log.Info("dhcp6 serving")
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	select {
	case <-ctx.Done():
		srv.Close()
		<-done
		return nil
	case err := <-done:
		return fmt.Errorf("dhcp6: %w", err)
	}
}

// Listening is closed once Serve has its socket.
func (s *Server) Listening() <-chan struct{} { return s.listening.Done() }

// Answer is the reply to m from peer (nil: none), with serverID as the
// server's DUID: a Message to a client on the link, a Relay-Reply to a
// relay.
func (s *Server) Answer(ctx context.Context, serverID dhcpv6.DUID, peer net.Addr, m dhcpv6.DHCPv6) dhcpv6.DHCPv6 {
	switch m := m.(type) {
	case *dhcpv6.Message:
		log := s.log.With("type", m.Type().String(), "xid", m.TransactionID.String(), "peer", addrString(peer))
		if reply := s.answer(ctx, serverID, m, clientMAC(nil, m, peer), netip.Prefix{}, log); reply != nil {
			return reply
		}
	case *dhcpv6.RelayMessage:
		if reply := s.answerRelayed(ctx, serverID, peer, m); reply != nil {
			return reply
		}
	}
	return nil
}

// answerRelayed answers a Relay-Forward from a declared relay agent for
// the link of its innermost relay's link-address.
func (s *Server) answerRelayed(ctx context.Context, serverID dhcpv6.DUID, peer net.Addr, m *dhcpv6.RelayMessage) dhcpv6.DHCPv6 {
	log := s.log.With("peer", addrString(peer))
	if m.Type() != dhcpv6.MessageTypeRelayForward {
		return nil
	}
	// The relay nearest the client says which link the client is on.
	first := m
	for {
		inner, ok := first.Options.RelayMessage().(*dhcpv6.RelayMessage)
		if !ok {
			break
		}
		first = inner
	}
	msg, err := m.GetInnerMessage()
	if err != nil {
		log.Info("dhcp6: relayed message without a client message; ignored", "err", err)
		return nil
	}
	log = log.With("type", msg.Type().String(), "xid", msg.TransactionID.String(), "link", first.LinkAddr.String())
	link, ok := s.relayedLink(peer, first.LinkAddr)
	if !ok {
		log.Info("dhcp6: relayed by an undeclared relay agent or for an undeclared link; ignored")
		return nil
	}
	reply := s.answer(ctx, serverID, msg, clientMAC(first, msg, peer), link, log)
	if reply == nil {
		return nil
	}
	rr, err := dhcpv6.NewRelayReplFromRelayForw(m, reply)
	if err != nil {
		log.Warn("dhcp6: relay reply", "err", err)
		return nil
	}
	return rr
}

// relayedLink is the declared link holding linkAddr, when peer is one of
// its relay agents.
func (s *Server) relayedLink(peer net.Addr, linkAddr net.IP) (netip.Prefix, bool) {
	u, ok := peer.(*net.UDPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	from, ok := netip.AddrFromSlice(u.IP)
	la, ok2 := netip.AddrFromSlice(linkAddr)
	if !ok || !ok2 {
		return netip.Prefix{}, false
	}
	for _, l := range s.cfg.Relayed {
		if l.Prefix.Contains(la.Unmap()) && slices.Contains(l.Agents, from.Unmap()) {
			return l.Prefix, true
		}
	}
	return netip.Prefix{}, false
}

// answer is the reply to the client message msg from mac; a valid link
// is the relayed link the client is on, which its reservation must be in.
func (s *Server) answer(ctx context.Context, serverID dhcpv6.DUID, msg *dhcpv6.Message, mac net.HardwareAddr, link netip.Prefix, log *slog.Logger) *dhcpv6.Message {
	if sid := msg.Options.ServerID(); sid != nil && !sid.Equal(serverID) {
		return nil // for another server
	}
	if mac == nil {
		log.Info("dhcp6: no MAC in the client's DUID or address; ignored")
		return nil
	}
	log = log.With("mac", mac.String())
	if t := msg.Type(); t == dhcpv6.MessageTypeRelease || t == dhcpv6.MessageTypeDecline {
		return s.released(msg, serverID, mac, log)
	}
	host, err := s.policy.Host(ctx, mac)
	if err != nil {
		log.Info("dhcp6: unknown host; ignored", "err", err)
		return nil
	}
	ip6, ok := netip.AddrFromSlice(host.IP6)
	if !ok || !ip6.Is6() || ip6.Is4In6() {
		log.Info("dhcp6: host has no IPv6 address; ignored", "machine", host.Name)
		return nil
	}
	if link.IsValid() && !link.Contains(ip6) {
		log.Info("dhcp6: host's IPv6 address is not on the relayed link; ignored", "machine", host.Name, "ip6", ip6.String())
		return nil
	}
	mods := []dhcpv6.Modifier{dhcpv6.WithServerID(serverID)}
	if iaid, ok := iaID(msg); ok {
		mods = append(mods, dhcpv6.WithIAID(iaid), dhcpv6.WithIANA(dhcpv6.OptIAAddress{
			IPv6Addr: net.IP(ip6.AsSlice()), PreferredLifetime: s.cfg.Lifetime / 2, ValidLifetime: s.cfg.Lifetime,
		}))
	}
	if len(s.cfg.DNS) > 0 {
		var dns []net.IP
		for _, a := range s.cfg.DNS {
			dns = append(dns, net.IP(a.AsSlice()))
		}
		mods = append(mods, dhcpv6.WithDNS(dns...))
	}
	boot, vendor := s.bootURL(ctx, msg, mac, host, log)
	if boot != "" {
		mods = append(mods, dhcpv6.WithOption(dhcpv6.OptBootFileURL(boot)))
		if vendor != nil {
			mods = append(mods, dhcpv6.WithOption(vendor))
		}
	}

	var reply *dhcpv6.Message
	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit:
		if msg.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
			reply, err = dhcpv6.NewReplyFromMessage(msg, mods...)
		} else {
			reply, err = dhcpv6.NewAdvertiseFromSolicit(msg, mods...)
		}
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind,
		dhcpv6.MessageTypeConfirm, dhcpv6.MessageTypeInformationRequest:
		reply, err = dhcpv6.NewReplyFromMessage(msg, mods...)
	default:
		return nil
	}
	if err != nil {
		log.Warn("dhcp6: reply", "err", err)
		return nil
	}
	if reply.Type() == dhcpv6.MessageTypeReply && reply.Options.OneIANA() != nil {
		s.leases.bind(mac, ip6)
	}
	log.Info("dhcp6 reply", "reply", reply.Type().String(), "machine", host.Name, "ip6", ip6.String(), "boot", boot)
	return reply
}

// released answers a Release or Decline addressed to this server: the
// address is no longer bound, and the client gets its Reply. UEFI
// firmware waits for that Reply: EDK2's DHCPv6 driver releases its
// address when it is stopped, as iPXE stops it after a PXE boot over
// IPv6 (taking the NIC over), and polls for the answer in a loop that
// nothing else ends; without it the machine hangs at "iPXE initialising
// devices".
func (s *Server) released(msg *dhcpv6.Message, serverID dhcpv6.DUID, mac net.HardwareAddr, log *slog.Logger) *dhcpv6.Message {
	if msg.Options.ServerID() == nil {
		return nil // RFC 8415 §16.9: a Release names its server
	}
	if msg.Type() == dhcpv6.MessageTypeRelease {
		s.leases.release(mac)
	}
	// NewReplyFromMessage builds no Reply to a Decline; the two differ
	// only in their type.
	req := *msg
	req.MessageType = dhcpv6.MessageTypeRelease
	reply, err := dhcpv6.NewReplyFromMessage(&req, dhcpv6.WithServerID(serverID),
		dhcpv6.WithOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess}))
	if err != nil {
		log.Warn("dhcp6: reply", "err", err)
		return nil
	}
	log.Info("dhcp6 reply", "reply", reply.Type().String())
	return reply
}

// bootURL is the boot file URL for the client, "" for none, and the
// vendor class to echo (HTTP boot).
func (s *Server) bootURL(ctx context.Context, msg *dhcpv6.Message, mac net.HardwareAddr, host pxe.Host, log *slog.Logger) (string, dhcpv6.Option) {
	if !requested(msg, dhcpv6.OptionBootfileURL) {
		return "", nil
	}
	intent, err := s.policy.Intent(ctx, mac)
	if err != nil || intent.Action == pxe.ActionNone || intent.Action == "" {
		return "", nil
	}
	switch host.Boot {
	case "", pxe.BootIPXE, pxe.BootHTTP:
	default:
		log.Info("dhcp6: no IPv6 boot file for this boot path", "boot_path", string(host.Boot))
		return "", nil
	}
	var httpClient dhcpv6.Option
	for _, vc := range msg.Options.VendorClasses() {
		for _, d := range vc.Data {
			if bytes.HasPrefix(d, []byte("HTTPClient")) {
				httpClient = vc
			}
		}
	}
	switch {
	case isIPXE(msg):
		return s.cfg.HTTPBaseURL + "/ipxe/" + mac.String(), nil
	case httpClient != nil || hasArch(msg, iana.EFI_X86_64_HTTP):
		return s.cfg.HTTPBaseURL + "/boot/" + bootfiles.UEFI, httpClient
	case host.Boot != pxe.BootHTTP && (hasArch(msg, iana.EFI_X86_64) || hasArch(msg, iana.EFI_BC)):
		return "tftp://[" + s.cfg.ServerIP.String() + "]/" + bootfiles.UEFI, nil
	}
	return "", nil
}

func requested(msg *dhcpv6.Message, code dhcpv6.OptionCode) bool {
	for _, c := range msg.Options.RequestedOptions() {
		if c == code {
			return true
		}
	}
	return false
}

func isIPXE(msg *dhcpv6.Message) bool {
	for _, uc := range msg.Options.UserClasses() {
		if string(uc) == "iPXE" {
			return true
		}
	}
	return false
}

func hasArch(msg *dhcpv6.Message, a iana.Arch) bool {
	for _, have := range msg.Options.ArchTypes() {
		if have == a {
			return true
		}
	}
	return false
}

// iaID is the client's IA_NA identity, if it asks for an address.
func iaID(msg *dhcpv6.Message) ([4]byte, bool) {
	if ia := msg.Options.OneIANA(); ia != nil {
		return ia.IaId, true
	}
	return [4]byte{}, false
}

// clientMAC is the MAC of msg's client: the client link-layer address
// its nearest relay (first, nil when not relayed) adds, else the one in
// the client's DUID, else the one the EUI-64 of its link-local address
// was formed from (the source peer, or what first saw).
func clientMAC(first *dhcpv6.RelayMessage, msg *dhcpv6.Message, peer net.Addr) net.HardwareAddr {
	if first != nil {
		if _, mac := first.Options.ClientLinkLayerAddress(); mac != nil {
			return mac
		}
		peer = &net.UDPAddr{IP: first.PeerAddr}
	}
	if mac, err := dhcpv6.ExtractMAC(msg); err == nil {
		return mac
	}
	if u, ok := peer.(*net.UDPAddr); ok && u.IP.IsLinkLocalUnicast() {
		if mac, err := dhcpv6.GetMacAddressFromEUI64(u.IP); err == nil {
			return mac
		}
	}
	return nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Leases are the addresses this server has given, for pxe/http to serve a
// machine's script to the address it holds.
func (s *Server) Leases() pxe.Leases { return s.leases }

// leases binds MACs to the reserved addresses replied to them.
type leases struct {
	mu    sync.Mutex
	byMAC map[string]netip.Addr
}

func (l *leases) bind(mac net.HardwareAddr, ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byMAC[mac.String()] = ip
}

func (l *leases) release(mac net.HardwareAddr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byMAC, mac.String())
}

func (l *leases) LeasedIP(mac net.HardwareAddr) (net.IP, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ip, ok := l.byMAC[mac.String()]
	if !ok {
		return nil, false
	}
	return net.IP(ip.AsSlice()), true
}

func (l *leases) MACOf(ip net.IP) (net.HardwareAddr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return nil, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for m, have := range l.byMAC {
		if have == a.Unmap() {
			hw, err := net.ParseMAC(m)
			return hw, err == nil
		}
	}
	return nil, false
}
