package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/internal/latch"
	"github.com/metal-dev/metal/pxe"
)

const (
	serverPort = 67
	clientPort = 68
	pxePort    = 4011 // PXE boot server discovery (proxy mode)

	// workers handle packets concurrently, so that one slow policy call or
	// lease save does not hold up the rest (packets that arrive while
	// nothing else waits are answered by the reader: see read). A
	// REQUEST's worker waits until its lease is durable before the ACK
	// goes out, and the leases of all REQUESTs waiting meanwhile are
	// written by one Save (group commit, see leaseTable.afterDurable).
	// Under load, saves take milliseconds and a few thousand REQUESTs
	// arrive per second; 256 keeps the workers from being the limit while
	// a waiting goroutine costs a few KiB.
	workers = 256
	// queueLen bounds the packets waiting for a worker; beyond it packets
	// are dropped, which is what a flood should cost.
	queueLen = 1024
	// inlineStreak: the reader answers packets itself only while fewer
	// than this many in a row found another behind them (see read).
	// perfdhcp's bursts of a few packets stay under it; a flood does not.
	inlineStreak = 4
	maxPacket    = 1500
)

// Server is the DHCP server: a Handler behind sockets bound to one
// interface.
type Server struct {
	cfg Config
	h   *Handler
	log *slog.Logger
	// unanswered bounds the warnings about requests not answered: under
	// a flood that exhausts the pool every DISCOVER is one, and writing
	// each took the CPU the server needs to read.
	unanswered logBudget
	// unsent bounds the warnings about replies the kernel refused.
	unsent logBudget
	// stormAt is when a reader last found packets queued behind each
	// other (unix nanoseconds): the segment is flooded. repeatCtx ends
	// and repeats counts the replies' repeats (see repeatReply).
	stormAt   atomic.Int64
	repeatCtx context.Context
	repeats   sync.WaitGroup
	// listening is closed once the leases are loaded and the sockets
	// bound (Listening).
	listening latch.Latch
	// link sends replies to clients that have no address yet; nil when
	// the server cannot open it, and then they are broadcast.
	link *linkSender
}

// NewServer checks cfg and returns a server; Serve loads the leases from
// store (nil: memory only) and serves.
func NewServer(cfg Config, policy pxe.BootPolicy, store LeaseStore, log *slog.Logger) (*Server, error) {
	if cfg.Interface == "" {
		return nil, errors.New("dhcp config: interface: missing")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("service", "dhcp", "interface", cfg.Interface)
	h, err := NewHandler(cfg, policy, store, log)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: h.cfg, h: h, log: log}, nil
}

// Listening is closed once Serve loaded the leases and bound its sockets.
func (s *Server) Listening() <-chan struct{} { return s.listening.Done() }

// Handler returns the server's handler.
func (s *Server) Handler() *Handler { return s.h }

// Leases returns the server's lease table, for the HTTP server.
func (s *Server) Leases() pxe.Leases { return s.h }

type packet struct {
	data []byte
	peer netip.AddrPort
	conn net.PacketConn
	pxe  bool
	// first: from a machine that goes first (a declared MAC, or one
	// holding an offer), as the reader found when it queued the packet.
	first bool
}

// Serve loads the leases, binds port 67 (and 4011 in proxy mode) on the
// interface and answers until ctx is cancelled; then it returns nil. The
// sockets are opened before Serve starts any goroutine, in the calling
// thread's network namespace.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.h.Load(ctx); err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	conns, err := listenSteered(ctx, s.cfg.Interface, serverPort)
	if err != nil {
		return err
	}
	pair := conns // the steered pair, or one socket
	pxeConn := -1 // the index of port 4011's socket, if any
	if s.cfg.Mode == ModeProxy {
		c, err := listen(ctx, s.cfg.Interface, pxePort, false)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return err
		}
		pxeConn = len(conns)
		conns = append(conns, c)
	}
	if s.link, err = openLinkSender(s.cfg.Interface, s.cfg.ServerIP); err != nil {
		s.log.Warn("replies to clients without an address are broadcast", "err", err)
	} else {
		defer s.link.Close()
	}
	steerCtx, stopSteering := context.WithCancel(ctx)
	defer stopSteering()
	var steering sync.WaitGroup
	if d, ok := s.h.policy.(DeclaredLister); ok && len(pair) == 2 {
		ready := make(chan struct{})
		steering.Go(func() { s.steerDeclared(steerCtx, pair, d, ready) })
		<-ready
	}
	s.log.Info("serving", "mode", s.cfg.Mode, "server_ip", s.cfg.ServerIP)
	s.listening.Close()

	// Machines the policy knows have a queue of their own that workers
	// serve first: a flood of unknown MACs fills the other queue and loses
	// packets, never a declared machine's.
	queues := queues{known: make(chan packet, queueLen), other: make(chan packet, queueLen)}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				p, ok := queues.next()
				if !ok {
					return
				}
				s.handle(ctx, p)
			}
		}()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopRepeats context.CancelFunc
	s.repeatCtx, stopRepeats = context.WithCancel(ctx)
	errc := make(chan error, len(conns))
	var readers sync.WaitGroup
	for i, c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			errc <- s.read(ctx, c, i == pxeConn, queues)
		}()
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		cancel()
	}
	stopSteering()
	steering.Wait()
	for _, c := range conns {
		c.Close() // unblocks the readers
	}
	readers.Wait()
	close(queues.known)
	close(queues.other)
	wg.Wait()
	s.h.leases.wait() // ACKs waiting for a Save (their sends fail: the sockets are closed)
	stopRepeats()
	s.repeats.Wait() // before the link sender closes
	s.log.Info("stopped")
	return first
}

// steerDeclared has the kernel steer the DISCOVERs of d's declared MACs
// to the second of the steered pair, and follows d's changes until ctx
// ends. ready is closed once the first list is in place.
func (s *Server) steerDeclared(ctx context.Context, pair []net.PacketConn, d DeclaredLister, ready chan<- struct{}) {
	var was []net.HardwareAddr
	for {
		macs, changed := d.DeclaredMACs()
		macs = sortMACs(macs)
		if !slices.EqualFunc(was, macs, func(a, b net.HardwareAddr) bool { return bytes.Equal(a, b) }) {
			if err := declare(pair, was, macs); err != nil {
				s.log.Warn("declared machines' DISCOVERs are not told apart in the kernel; the server still answers them first", "machines", len(macs), "err", err)
				was = nil
			} else {
				was = macs
			}
		}
		if ready != nil {
			close(ready)
			ready = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// queues holds the packets waiting for a worker: those of known machines
// apart from the rest.
type queues struct{ known, other chan packet }

// next returns the next packet, a known machine's first; false once the
// server stops (both queues closed).
func (q queues) next() (packet, bool) {
	select {
	case p, ok := <-q.known:
		if ok {
			return p, true
		}
	default:
	}
	select {
	case p, ok := <-q.known:
		if ok {
			return p, true
		}
		p, ok = <-q.other
		return p, ok
	case p, ok := <-q.other:
		if ok {
			return p, true
		}
		p, ok = <-q.known
		return p, ok
	}
}

// first reports whether a packet goes to the known-first queue: a
// machine the policy declares, or a REQUEST (or RELEASE, DECLINE, INFORM)
// from a MAC the lease table has an address for (offered or leased), so
// that a client that got an offer during a flood also gets its ACK. A
// DISCOVER from an unknown MAC, what a flood is made of, never is. It only
// reads the header and option 53: full parsing is the workers' job.
func (s *Server) first(ctx context.Context, data []byte) bool {
	const chaddrAt, minLen = 28, 240
	if len(data) < minLen || data[1] != 1 || data[2] != 6 { // Ethernet, 6-byte MACs
		return false
	}
	mac := data[chaddrAt : chaddrAt+6]
	if _, err := s.h.policy.Host(ctx, net.HardwareAddr(mac)); err == nil {
		return true
	}
	return rawMessageType(data) != dhcpv4.MessageTypeDiscover && s.h.leases.has(macKey(mac))
}

// rawMessageType returns option 53 of a BOOTP packet of at least 240
// bytes, or MessageTypeNone, without parsing the rest.
func rawMessageType(data []byte) dhcpv4.MessageType {
	opts := data[240:]
	if [4]byte(data[236:240]) != [4]byte{99, 130, 83, 99} { // magic cookie
		return dhcpv4.MessageTypeNone
	}
	for len(opts) > 0 {
		code := opts[0]
		switch code {
		case 0: // pad
			opts = opts[1:]
			continue
		case 255: // end
			return dhcpv4.MessageTypeNone
		}
		if len(opts) < 2 || len(opts) < 2+int(opts[1]) {
			return dhcpv4.MessageTypeNone
		}
		if code == 53 && opts[1] == 1 {
			return dhcpv4.MessageType(opts[2])
		}
		opts = opts[2+int(opts[1]):]
	}
	return dhcpv4.MessageTypeNone
}

// readBatch is how many datagrams one read takes from the socket
// (recvmmsg): under a flood, one system call per packet was most of what
// the reader cost, and a reader slower than the flood lets the kernel drop
// packets before anyone can tell a known machine's from the rest.
const readBatch = 64

// read feeds one socket's packets to the workers, known machines' to
// their own queue. A DISCOVER or REQUEST that arrives while the worker
// queues are empty and nothing waits behind it in the socket is answered
// here instead: handing each packet to a worker woke a thread per packet,
// and those wake-ups and context switches were the larger part of the
// server's CPU. (A REQUEST's ACK still waits for its lease to be durable:
// the lease table's committer sends it.) Under a flood the socket never
// empties: after inlineStreak packets each found another waiting, all go
// through the queues.
//
// Known machines first holds only for packets the reader gets to see: the
// kernel drops datagrams, anyone's, once the socket's receive buffer is
// full, and a packet waits behind all that the buffer holds. So REQUESTs
// and the like arrive on a socket of their own, which a DISCOVER flood
// never fills (see listenSteered); and the reader does little per packet (batched reads, a look at
// the MAC and message type, an unknown packet that finds its queue full
// dropped before it is even copied), and the buffer is large (see listen)
// so it rides out the moments the reader waits for a CPU.
func (s *Server) read(ctx context.Context, c net.PacketConn, pxe bool, q queues) error {
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, readBatch)
	const slot = maxPacket + 1 // a byte more, to tell longer packets
	bufs := make([]byte, readBatch*slot)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{bufs[i*slot : (i+1)*slot]}
	}
	fill := bufferFill(c)
	// With a shared store, each DISCOVER and REQUEST is a round trip to
	// it, which must not hold up reading: workers answer every packet.
	here := s.h.leases.shared == nil
	streak := 0 // packets in a row that found another waiting
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dhcp: read: %w", err)
		}
		// Behind: the socket holds more than a read takes, and its buffer
		// is half full. The flood is faster than the server; work given
		// to the workers now only takes CPU from this reader, until the
		// kernel drops what it cannot buffer, known machines' packets
		// too. So until the reader has caught up, only the packets that
		// go first are handed on.
		behind := n == len(msgs) && fill() > 0.5
		for i := range n {
			m := &msgs[i]
			// Another waits behind this one if the read took more, or
			// filled the batch (then the socket may hold more).
			if i < n-1 || n == len(msgs) {
				streak++
			} else {
				streak = 0
			}
			if streak == inlineStreak {
				s.stormAt.Store(time.Now().UnixNano())
			}
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok || m.N > maxPacket {
				continue
			}
			data := m.Buffers[0][:m.N]
			p := packet{peer: ua.AddrPort(), conn: c, pxe: pxe}
			if here && streak < inlineStreak && len(q.known) == 0 && len(q.other) == 0 {
				p.data = append([]byte(nil), data...)
				if s.handleHere(ctx, p) {
					continue
				}
			}
			queue := q.other
			if s.first(ctx, data) {
				queue, p.first = q.known, true
			} else if behind || len(q.other) == cap(q.other) {
				s.dropped(p)
				continue
			}
			if p.data == nil {
				p.data = append([]byte(nil), data...)
			}
			select {
			case queue <- p:
			default:
				s.dropped(p)
			}
		}
	}
}

// dropped notes a packet no worker had room for.
func (s *Server) dropped(p packet) {
	s.log.Debug("queue full: packet dropped", "from", p.peer)
}

// soMeminfo is SO_MEMINFO (Linux 3.9), which x/sys/unix does not name:
// a socket's memory counters, the first two the bytes in its receive
// queue and its receive buffer's size.
const soMeminfo = 55

// bufferFill returns a check of how full c's receive buffer is, from 0 to
// 1; without access to the socket it always says 0.
func bufferFill(c net.PacketConn) func() float64 {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return func() float64 { return 0 }
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return func() float64 { return 0 }
	}
	var mem [9]uint32 // SK_MEMINFO_VARS
	return func() float64 {
		var errno syscall.Errno
		size := uint32(len(mem) * 4)
		if err := rc.Control(func(fd uintptr) {
			_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, soMeminfo,
				uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&size)), 0)
		}); err != nil || errno != 0 || mem[1] == 0 {
			return 0
		}
		return float64(mem[0]) / float64(mem[1])
	}
}

// handleHere answers a DISCOVER or REQUEST on the reader's goroutine and
// reports true; anything else it leaves to the workers.
func (s *Server) handleHere(ctx context.Context, p packet) (handled bool) {
	defer s.recoverPacket(p)
	req, err := dhcpv4.FromBytes(p.data)
	if err != nil {
		return false // the worker says what is wrong with it
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest:
		handled = true // even if answering panics: it would again on a worker
		// The declared machines' own socket is read here even during a
		// flood; only then does it matter whether this one goes first.
		p.first = s.stormy(time.Now()) && s.first(ctx, p.data)
		s.answer(ctx, p, req, true)
	}
	return handled
}

// handle answers one packet on a worker.
func (s *Server) handle(ctx context.Context, p packet) {
	defer s.recoverPacket(p)
	req, err := dhcpv4.FromBytes(p.data)
	if err != nil {
		s.observe("malformed", "error")
		s.log.Debug("malformed packet dropped", "from", p.peer, "err", err)
		return
	}
	s.answer(ctx, p, req, false)
}

// recoverPacket logs a panic answering p; the server goes on.
func (s *Server) recoverPacket(p packet) {
	if r := recover(); r != nil {
		s.log.Error("panic handling packet", "from", p.peer, "panic", r, "stack", string(debug.Stack()))
	}
}

// answer answers req. An ACK goes out once its lease is durable: the
// worker waits for that, or (later) the lease table's committer sends it.
func (s *Server) answer(ctx context.Context, p packet, req *dhcpv4.DHCPv4, later bool) {
	a, err := s.h.answer(ctx, req, From{Peer: p.peer, PXEPort: p.pxe})
	switch {
	case err != nil || !a.durable:
		s.send(p, req, a, err)
	case later:
		s.h.leases.afterDurable(ctx, a.gen, func(err error) { s.send(p, req, a, err) })
	default:
		s.send(p, req, a, s.h.leases.persistThrough(ctx, a.gen))
	}
}

// send sends a reply, or logs why there is none (err).
func (s *Server) send(p packet, req *dhcpv4.DHCPv4, a reply, err error) {
	msgType := observedName(req.MessageType())
	if err != nil {
		s.observe(msgType, "error")
		if s.unanswered.allow(time.Now(), func(n int) { s.log.Warn("more requests not answered, not logged one by one", "count", n) }) {
			s.log.Warn("request not answered", "from", p.peer, "mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(), "msg", req.MessageType().String(), "err", err)
		}
		return
	}
	if a.resp == nil {
		s.observe(msgType, "ignored")
		return
	}
	if a.sent != nil {
		a.sent()
	}
	s.observe(msgType, observedName(a.resp.MessageType()))
	dst := replyAddr(req, a.resp, From{Peer: p.peer, PXEPort: p.pxe})
	b := a.resp.ToBytes()
	if !s.writeReply(p.conn, dst, b, msgType, req.ClientHWAddr) {
		return
	}
	mt := a.resp.MessageType()
	if dst.hw != nil && (mt == dhcpv4.MessageTypeAck || mt == dhcpv4.MessageTypeOffer && p.first) && s.stormy(time.Now()) {
		s.repeatReply(p.conn, dst, b, msgType, observedName(mt)+"-repeat", req.ClientHWAddr)
	}
}

// writeReply writes a reply and reports whether the kernel took it.
func (s *Server) writeReply(c net.PacketConn, dst replyTo, b []byte, msgType string, mac net.HardwareAddr) bool {
	err := s.write(c, dst, b)
	if err == nil {
		return true
	}
	s.observe(msgType, "unsent")
	if s.unsent.allow(time.Now(), func(n int) { s.log.Warn("more replies not sent, not logged one by one", "count", n) }) {
		s.log.Warn("send reply", "to", dst, "mac", mac.String(), "err", err)
	}
	return false
}

// replyRepeats are when an ACK to a client without an address, or an
// OFFER to a machine that goes first, is sent again while the segment is
// flooded, after the first. (The flood's own OFFERs are not: they would
// add to it.)
//
// Such a client listens on a packet socket (it has no address to receive
// on), and busybox's udhcpc filters nothing there: every frame of a
// broadcast storm lands in that socket's buffer, which overflows while the
// client waits for a CPU, and the kernel then drops the ACK with the rest.
// The client asks again only a few times (udhcpc: three REQUESTs), so one
// copy of each reply, arriving while the buffer is full, could fail a
// machine that holds an offer. Copies spread over the client's wait find
// room once it reads; a client that has its lease ignores them (their xid
// is done with).
var replyRepeats = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond}

// stormWindow is how long after the last sign of a flood the segment is
// taken for flooded.
const stormWindow = 5 * time.Second

// stormy reports whether a reader saw a flood within stormWindow of now.
func (s *Server) stormy(now time.Time) bool {
	at := s.stormAt.Load()
	return at != 0 && now.Sub(time.Unix(0, at)) < stormWindow
}

// repeatReply sends b to dst again at each of replyRepeats, until the
// server stops, telling Observe of each copy as result.
func (s *Server) repeatReply(c net.PacketConn, dst replyTo, b []byte, msgType, result string, mac net.HardwareAddr) {
	ctx := s.repeatCtx
	if ctx == nil || ctx.Err() != nil {
		return
	}
	s.repeats.Go(func() {
		start := time.Now()
		for _, d := range replyRepeats {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(d))):
			}
			if !s.writeReply(c, dst, b, msgType, mac) {
				return
			}
			s.observe(msgType, result)
		}
	})
}

// write sends b to dst: in a frame to its hardware address if it has one
// and the server can (else broadcast, which every client without an
// address hears), otherwise through the UDP socket c.
func (s *Server) write(c net.PacketConn, dst replyTo, b []byte) error {
	if dst.hw != nil {
		if s.link != nil && len(b) <= maxUDPPayload {
			return s.link.send(dst.hw, dst.addr, b)
		}
		dst.addr = broadcast
	}
	_, err := c.WriteTo(b, net.UDPAddrFromAddrPort(dst.addr))
	return err
}

// logBudget lets through at most logPerSecond records a second and
// counts the rest, for one summary record when the next second's first
// comes.
type logBudget struct {
	mu      sync.Mutex
	start   time.Time
	n, over int
}

const logPerSecond = 10

// allow reports whether a record may be written at now; before the
// first of a new second it calls summary with the count of the last
// second's records held back, if any.
func (b *logBudget) allow(now time.Time, summary func(n int)) bool {
	b.mu.Lock()
	over := 0
	if now.Sub(b.start) >= time.Second {
		over = b.over
		b.start, b.n, b.over = now, 0, 0
	}
	ok := b.n < logPerSecond
	if ok {
		b.n++
	} else {
		b.over++
	}
	b.mu.Unlock()
	if over > 0 {
		summary(over)
	}
	return ok
}

// observedName is a message type as Observe is told it: "discover",
// "ack", ... without a lower-cased copy per packet for the usual ones.
func observedName(mt dhcpv4.MessageType) string {
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		return "discover"
	case dhcpv4.MessageTypeOffer:
		return "offer"
	case dhcpv4.MessageTypeRequest:
		return "request"
	case dhcpv4.MessageTypeAck:
		return "ack"
	case dhcpv4.MessageTypeNak:
		return "nak"
	case dhcpv4.MessageTypeRelease:
		return "release"
	case dhcpv4.MessageTypeDecline:
		return "decline"
	case dhcpv4.MessageTypeInform:
		return "inform"
	}
	return strings.ToLower(mt.String())
}

func (s *Server) observe(msgType, result string) {
	if s.cfg.Observe != nil {
		s.cfg.Observe(msgType, result)
	}
}

var broadcast = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), clientPort)

// replyTo is where a reply goes: to addr, and when hw is set, in a frame
// to that hardware address (the client has no address for the IP stack
// to resolve yet).
type replyTo struct {
	addr netip.AddrPort
	hw   net.HardwareAddr
}

func (r replyTo) String() string {
	if r.hw != nil {
		return r.addr.String() + " at " + r.hw.String()
	}
	return r.addr.String()
}

// replyAddr is where a reply goes (RFC 2131 4.1): back to the sender on
// port 4011; to a relay's port 67; a NAK, broadcast; to a client that has
// an address (renewing, INFORM) at that address; to a client that asked
// for a broadcast (its broadcast flag: it cannot receive a unicast before
// it has its address), or that is given no address, broadcast; else to
// yiaddr at its hardware address. Broadcasts reach every client on the
// link and under a flood of DISCOVERs fill the buffers of those waiting
// for their own reply: a unicast reaches one port of a switch that has
// learned the MAC.
func replyAddr(req, resp *dhcpv4.DHCPv4, from From) replyTo {
	if from.PXEPort {
		return replyTo{addr: from.Peer}
	}
	if gi, ok := addr4(req.GatewayIPAddr); ok {
		return replyTo{addr: netip.AddrPortFrom(gi, serverPort)}
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return replyTo{addr: broadcast}
	}
	if ci, ok := addr4(req.ClientIPAddr); ok {
		return replyTo{addr: netip.AddrPortFrom(ci, clientPort)}
	}
	yi, ok := addr4(resp.YourIPAddr)
	if !ok || req.IsBroadcast() || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return replyTo{addr: broadcast}
	}
	return replyTo{addr: netip.AddrPortFrom(yi, clientPort), hw: req.ClientHWAddr}
}

// recvBuffer is the receive buffer asked for the server's sockets. The
// kernel's default (net.core.rmem_default, 208 KiB on Debian) holds a few
// hundred DHCP packets (each costs about 1 KiB of buffer, headers
// included): a flood fills that within a millisecond of the reader
// waiting for a CPU, and then the kernel drops every packet, a known
// machine's REQUEST as well as the flood's DISCOVERs. 4 MiB holds tens
// of milliseconds of a flood, longer than the reader waits.
const recvBuffer = 4 << 20

// listen opens a UDP socket on port bound to the interface (so a server per
// interface can share the port, and replies leave by that interface),
// allowed to broadcast, with a receive buffer of recvBuffer. Unlike
// server4.NewIPv4UDPConn it sets SO_REUSEPORT only when asked (for
// listenSteered's second socket): a second server on the same interface fails to
// start instead of silently getting half the packets.
func listen(ctx context.Context, iface string, port int, reusePort bool) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.BindToDevice(int(fd), iface); serr != nil {
				serr = fmt.Errorf("bind to device %s: %w", iface, serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("allow broadcast: %w", serr)
				return
			}
			if reusePort {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
					serr = fmt.Errorf("share the port: %w", serr)
					return
				}
			}
			// Beyond net.core.rmem_max when allowed (root); else as
			// far as it goes. Not fatal: a smaller buffer only drops
			// sooner under a flood.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuffer) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer)
			}
		})
		return errors.Join(err, serr)
	}}
	c, err := lc.ListenPacket(ctx, "udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s port %d: %w", iface, port, err)
	}
	return c, nil
}
