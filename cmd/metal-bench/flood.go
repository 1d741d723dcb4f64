package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// The flood row: how long a declared machine takes to get its lease while
// 10,000 unknown MACs DISCOVER as fast as a socket sends them (sendmmsg),
// as after a power failure when a whole rack asks at once. The machine
// starts once every flood MAC has sent a DISCOVER; it retransmits each
// second, as a client does, and gives up after floodGiveUp (its time then
// counts as floodGiveUp).
const (
	floodMACs   = 10000
	floodBatch  = 64
	floodGiveUp = 10 * time.Second
)

var floodKnown = dhcpHost{name: "known", mac: "02:00:00:00:00:05", ip: "192.0.2.5"}

// benchFlood measures the known machine's DORA under the flood for metal
// serve, dnsmasq and Kea, each told of the machine, started fresh each
// run, runs alternating.
func benchFlood(cfg *config) ([]Result, error) {
	lab, err := newNetLab()
	if err != nil {
		return nil, err
	}
	defer lab.close()
	servers := dhcpServers(cfg, floodKnown)
	got, packets := map[string][]float64{}, map[string][]float64{}
	failed := map[string]int{}
	for run := range cfg.runs {
		for _, s := range servers {
			dir := filepath.Join(cfg.work, fmt.Sprintf("flood-%s-%d", s.name, run))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			took, sent, err := measureFlood(cfg.ctx, lab, s, dir)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			if took >= floodGiveUp {
				failed[s.name]++
			}
			cfg.logger.Info("flood run", "server", s.name, "run", run+1, "known_lease", took.Round(time.Millisecond),
				"flood_packets_meanwhile", sent)
			got[s.name] = append(got[s.name], took.Seconds())
			packets[s.name] = append(packets[s.name], float64(sent))
		}
	}
	const measure = "DHCP known machine's lease while 10,000 unknown MACs DISCOVER"
	var rows []Result
	for _, peer := range []struct{ name, label string }{{"dnsmasq", "dnsmasq --no-ping"}, {"kea", "kea-dhcp4 memfile (no fsync)"}} {
		r := compareLower(measure, "s", statsOf(got["metal"]), peer.label, statsOf(got[peer.name]), 1.0)
		r.Note = join(r.Note, fmt.Sprintf("flood packets sent meanwhile (median): metal %s, %s %s",
			num(statsOf(packets["metal"]).Median), peer.name, num(statsOf(packets[peer.name]).Median)))
		for _, name := range []string{"metal", peer.name} {
			if failed[name] > 0 {
				r.Note = join(r.Note, fmt.Sprintf("%s: no lease within %v in %d of %d runs", name, floodGiveUp, failed[name], cfg.runs))
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// measureFlood starts s, checks it answers, floods it and times the known
// machine's DORA; it returns that time and the flood packets sent
// meanwhile.
func measureFlood(ctx context.Context, lab *netLab, s dhcpServer, dir string) (time.Duration, int64, error) {
	p, err := s.start(lab, dir)
	if err != nil {
		return 0, 0, err
	}
	defer p.stop()
	var conn net.PacketConn
	if err := inNetns(lab.client, func() error {
		conn, err = clientSocket(lab.clientIf)
		return err
	}); err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	// Ready: a machine of the pool gets a lease.
	ready := false
	for range 20 {
		if err := p.exited(); err != nil {
			return 0, 0, err
		}
		if _, err := dora(ctx, conn, net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}, time.Second, time.Second); err == nil {
			ready = true
			break
		}
	}
	if !ready {
		return 0, 0, fmt.Errorf("%s answers no DHCP (log %s: %s)", s.name, p.log, tail(p.log, 400))
	}

	var sent atomic.Int64
	stop := make(chan struct{})
	flooded := make(chan error, 1)
	go func() { flooded <- flood(conn, &sent, stop) }()
	defer func() {
		close(stop)
		<-flooded
	}()
	for sent.Load() < floodMACs {
		select {
		case err := <-flooded:
			return 0, 0, err
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	mac, err := net.ParseMAC(floodKnown.mac)
	if err != nil {
		return 0, 0, err
	}
	sent0 := sent.Load()
	took, err := dora(ctx, conn, mac, time.Second, floodGiveUp)
	if errors.Is(err, errNoLease) {
		took = floodGiveUp
	} else if err != nil {
		return 0, 0, err
	}
	return took, sent.Load() - sent0, p.exited()
}

// flood sends DISCOVERs from floodMACs MACs round and round until stop.
func flood(conn net.PacketConn, sent *atomic.Int64, stop <-chan struct{}) error {
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	msgs := make([]ipv4.Message, floodMACs)
	for i := range msgs {
		m, err := dhcpv4.NewDiscovery(net.HardwareAddr{0x02, 0xff, 0, byte(i >> 16), byte(i >> 8), byte(i)})
		if err != nil {
			return err
		}
		msgs[i] = ipv4.Message{Buffers: [][]byte{m.ToBytes()}, Addr: dst}
	}
	pc := ipv4.NewPacketConn(conn)
	for i := 0; ; {
		select {
		case <-stop:
			return nil
		default:
		}
		n, err := pc.WriteBatch(msgs[i:min(i+floodBatch, len(msgs))], 0)
		if err != nil {
			return fmt.Errorf("flood: %w", err)
		}
		sent.Add(int64(n))
		i = (i + n) % len(msgs)
	}
}

var errNoLease = errors.New("no lease")

// dora gets a lease for mac as a client does: DISCOVER until an OFFER,
// then REQUEST until an ACK, sending again after each wait without an
// answer, and errNoLease after giveUp. It returns how long it took.
func dora(ctx context.Context, conn net.PacketConn, mac net.HardwareAddr, wait, giveUp time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(giveUp)
	// Broadcast replies: the socket has no address to take a unicast
	// one at (dnsmasq sends to the offered address otherwise).
	disc, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithBroadcast(true))
	if err != nil {
		return 0, err
	}
	offer, err := exchange(ctx, conn, disc, dhcpv4.MessageTypeOffer, wait, deadline)
	if err != nil {
		return 0, err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithBroadcast(true))
	if err != nil {
		return 0, err
	}
	if _, err := exchange(ctx, conn, req, dhcpv4.MessageTypeAck, wait, deadline); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// exchange broadcasts m until a reply of type want with m's transaction
// ID arrives, sending again after each wait.
func exchange(ctx context.Context, conn net.PacketConn, m *dhcpv4.DHCPv4, want dhcpv4.MessageType, wait time.Duration, deadline time.Time) (*dhcpv4.DHCPv4, error) {
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := conn.WriteTo(m.ToBytes(), dst); err != nil {
			return nil, err
		}
		until := time.Now().Add(wait)
		if until.After(deadline) {
			until = deadline
		}
		for {
			_ = conn.SetReadDeadline(until)
			n, _, err := conn.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return nil, err
			}
			r, err := dhcpv4.FromBytes(buf[:n])
			if err == nil && r.OpCode == dhcpv4.OpcodeBootReply && r.TransactionID == m.TransactionID && r.MessageType() == want {
				return r, nil
			}
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, errNoLease
}

// clientSocket is a DHCP client's socket on iface: port 68, broadcasts.
func clientSocket(iface string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = errors.Join(unix.BindToDevice(int(fd), iface),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1))
		})
		return errors.Join(err, serr)
	}}
	return lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
}

// inNetns runs fn on a thread inside namespace ns; sockets fn opens stay
// in it. The thread is not reused afterwards if it cannot go back.
func inNetns(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", ns, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return errors.Join(fnErr, fmt.Errorf("leave netns %s: %w", ns, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}
