package dhcp

// A flood of unknown MACs against a server process pinned to one CPU, then
// two: the known machines' packets must still be answered.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/internal/procstat"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/pxetest"
)

const (
	// floodServerEnv makes TestFloodServer the server of a TestFlood run:
	// this test binary again, in the lab namespace, under taskset.
	floodServerEnv = "METAL_TEST_FLOOD_SERVER"
	// floodStatsPrefix starts the line TestFloodServer prints as it stops.
	floodStatsPrefix = "flood-server-stats: "
	floodMACs        = 10000
	floodBatch       = 64
)

var (
	floodKnownMAC   = pxetest.MAC(50)
	floodOfferedMAC = pxetest.MAC(51) // not declared: gets an offer before the flood
)

// floodStats is what the server process reports as it stops.
type floodStats struct {
	GOMAXPROCS int
	CPUs       int // in its affinity mask
	Leases     int
	RateTable  int
	// Answers counts the packets read by type and outcome ("request
	// ack": 3): a failure's log says whether REQUESTs reached the server
	// and were answered.
	Answers    map[string]int
	HeapGrowth int64
}

// TestFlood sends DISCOVERs from 10,000 distinct MACs as fast as a socket
// takes them to a server process confined to one CPU (then two). Once the
// flood runs, a declared machine asks for its address with udhcpc, and a
// machine the server offered an address before the flood sends its
// REQUEST: both must be answered (as a client would, each may retransmit),
// and the server's tables must stay bounded.
//
// The server runs in a process of its own under taskset, which confines
// all its threads (Go derives GOMAXPROCS from the same mask): GOMAXPROCS
// alone bounds only the threads running Go code, not those in system
// calls, and the flooder in the same process would be slowed with the
// server. The flooder runs here, on a CPU of its own when there is one
// to spare. The test asserts what is answered, not how fast: the log says
// how long the known machine took and how many flood packets went out
// meanwhile, and how many the kernel dropped for want of buffer.
func TestFlood(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	pxetest.RequireTool(t, "taskset", "util-linux")
	cpus := allowedCPUs(t)
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("server on %d CPU", n), func(t *testing.T) {
			if len(cpus) < n {
				t.Skipf("this process may run on %d CPU", len(cpus))
			}
			flood(t, cpus[:n], cpus[n:])
		})
	}
}

func flood(t *testing.T, serverCPUs, spare []int) {
	lab := pxetest.NewLab(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cpuList := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(serverCPUs)), ","), "[]")
	srv := lab.NS().Start("env", floodServerEnv+"=1", "taskset", "-c", cpuList,
		exe, "-test.run", "^TestFloodServer$", "-test.count", "1")
	deadline := time.Now().Add(10 * time.Second)
	for !udpBound(t, lab.NS(), serverPort) {
		select {
		case <-srv.Done():
			t.Fatalf("server stopped at once: %v\n%s", srv.Err(), srv.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not bind port 67 within 10s\n%s", srv.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Before the flood: an offer to a machine the server does not know.
	offeredNS := lab.AddHost("offered", floodOfferedMAC)
	offeredConn := udpIn(t, offeredNS, "eth0", clientPort)
	// A UDP socket on an interface without an address hears only
	// broadcasts: the broadcast flag asks for them.
	disc := discover(floodOfferedMAC, dhcpv4.WithBroadcast(true))
	offer := parseReply(t, exchange(t, offeredConn, disc.ToBytes(), disc.TransactionID, "255.255.255.255:67", 3*time.Second))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no offer before the flood: %v", offer)
	}
	knownNS := lab.AddHost("known", floodKnownMAC)

	flooder := lab.AddHost("flood", nil)
	fd := floodSocket(t, flooder)
	var sent atomic.Int64
	stop := make(chan struct{})
	flooded := make(chan error, 1)
	go func() {
		if len(spare) > 0 {
			// This goroutine's thread only, on CPUs the server has not.
			// The thread stays locked: it ends with the goroutine, and
			// never runs another test's goroutines with this affinity.
			runtime.LockOSThread()
			var set unix.CPUSet
			for _, c := range spare {
				set.Set(c)
			}
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				flooded <- fmt.Errorf("pin the flooder: %w", err)
				return
			}
		}
		// Each DISCOVER in a frame from its own MAC, as a rack's machines
		// send them: the lab's bridge learns where each MAC is, as a
		// switch does, and the replies to the flood go to the flooder's
		// port only. Without the broadcast flag, as Linux clients send
		// them.
		frames := make([]mmsghdr, floodMACs)
		iovs := make([]unix.Iovec, floodMACs)
		for i := range frames {
			mac := net.HardwareAddr{0x02, 0xff, 0, byte(i >> 16), byte(i >> 8), byte(i)}
			b := floodFrame(mac, discover(mac, pxeClient(iana.INTEL_X86PC)).ToBytes())
			iovs[i].Base = &b[0]
			iovs[i].SetLen(len(b))
			frames[i].hdr.Iov = &iovs[i]
			frames[i].hdr.SetIovlen(1)
		}
		for i := 0; ; {
			select {
			case <-stop:
				flooded <- nil
				return
			default:
			}
			// Batches of floodBatch frames per system call (sendmmsg):
			// a flood cheaper to send than to read.
			batch := frames[i:min(i+floodBatch, len(frames))]
			r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&batch[0])), uintptr(len(batch)), 0, 0, 0)
			n := int(r)
			switch {
			case errno == unix.ENOBUFS:
				n = 0
			case errno != 0:
				flooded <- fmt.Errorf("flood: %w", errno)
				return
			}
			sent.Add(int64(n))
			i = (i + n) % len(frames)
		}
	}()
	stopped := false
	stopFlood := func() {
		if !stopped {
			stopped = true
			close(stop)
			if err := <-flooded; err != nil {
				t.Fatal(err)
			}
		}
	}
	defer stopFlood()
	// The machines ask only once every flood MAC has sent a DISCOVER.
	for sent.Load() < floodMACs {
		select {
		case err := <-flooded:
			t.Fatal(err)
		default:
		}
		time.Sleep(time.Millisecond)
	}
	drops0, cpu0 := udpRcvbufErrors(t, lab.NS()), cpuTicks(t, srv.Pid())
	backlog0, ports0 := backlogDrops(t), portDrops(t, lab.NS())
	sent0, start := sent.Load(), time.Now()

	acked := make(chan *dhcpv4.DHCPv4, 1)
	go func() { acked <- requestOffered(t, offeredConn, offer) }()
	env, out := udhcpcOut(t, knownNS)
	took, during := time.Since(start), sent.Load()-sent0
	ack := <-acked
	drops, cpu := udpRcvbufErrors(t, lab.NS())-drops0, cpuTicks(t, srv.Pid())-cpu0
	backlog, ports := backlogDrops(t)-backlog0, portDrops(t, lab.NS())
	for p, n := range ports0 {
		ports[p] -= n
	}
	stopFlood()

	if env["ip"] != "192.0.2.50" {
		t.Errorf("during the flood the known machine got %q, want 192.0.2.50; udhcpc said:\n%s", env["ip"], out)
	}
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Errorf("during the flood the REQUEST for the offered %v got %v, want its ACK", offer.YourIPAddr, ack)
	}
	// The CPU the server had, of what it was allowed: on a busy host
	// other processes share its CPU, and the kernel drops what the
	// server has no time to read.
	t.Logf("server on CPU %s: known machine leased in %v (%d DISCOVERs, %d REQUESTs) while %d flood packets were sent (%.0f/s); meanwhile the server used %.0f%% of its CPUs and its socket dropped %d packets for want of buffer",
		cpuList, took.Round(time.Millisecond), strings.Count(out, "broadcasting discover"), strings.Count(out, "broadcasting select"),
		during, float64(during)/took.Seconds(),
		100*float64(cpu)/100/took.Seconds()/float64(len(serverCPUs)), drops)
	t.Logf("meanwhile the CPUs' input backlogs dropped %d packets; the switch's ports dropped %v", backlog, ports)

	// And after it, too.
	if env := udhcpc(t, lab.AddHost("known2", floodKnownMAC)); env["ip"] != "192.0.2.50" {
		t.Errorf("after the flood the known machine got %q, want 192.0.2.50", env["ip"])
	}

	srv.Stop()
	var st floodStats
	for line := range strings.Lines(srv.Log()) {
		if s, ok := strings.CutPrefix(line, floodStatsPrefix); ok {
			if err := json.Unmarshal([]byte(s), &st); err != nil {
				t.Fatalf("server stats %q: %v", s, err)
			}
		}
	}
	if st.CPUs != len(serverCPUs) {
		t.Fatalf("server ran on %d CPUs (GOMAXPROCS %d), want %d; its log:\n%s", st.CPUs, st.GOMAXPROCS, len(serverCPUs), srv.Log())
	}
	if bound := 100 + 1 + 1; st.Leases > bound {
		t.Errorf("lease table has %d entries after the flood, bound %d (pool + reservation + the offered machine)", st.Leases, bound)
	}
	if st.RateTable > defaultMaxTracked {
		t.Errorf("rate table has %d entries, bound %d", st.RateTable, defaultMaxTracked)
	}
	t.Logf("after a flood of %d MACs: lease table %d, rate table %d, heap growth %d KiB; packets by type and answer: %v", floodMACs, st.Leases, st.RateTable, st.HeapGrowth>>10, st.Answers)
	// The known machine's udhcpc listens on a packet socket that takes in
	// every frame of the flood: the server sends its ACK again while it
	// sees the flood (replyRepeats).
	if st.Answers["request ack-repeat"] == 0 {
		t.Errorf("no ACK was sent again during the flood: the server did not take the segment for flooded")
	}
	if st.HeapGrowth > 32<<20 {
		t.Errorf("heap grew by %d MiB during the flood", st.HeapGrowth>>20)
	}
}

// floodSocket returns a packet socket that sends whole Ethernet frames
// on ns's eth0; it is closed when the test ends.
func floodSocket(t *testing.T, ns *pxetest.Netns) int {
	fd := -1
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index})
	})
	if fd >= 0 {
		t.Cleanup(func() { unix.Close(fd) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// mmsghdr is struct mmsghdr (sendmmsg(2)), which x/sys/unix does not
// name.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// floodFrame returns a client's broadcast of payload from port 68 to 67,
// in an Ethernet frame from mac.
func floodFrame(mac net.HardwareAddr, payload []byte) []byte {
	eth := append(append(bytes.Repeat([]byte{0xff}, 6), mac...), 0x08, 0x00) // to all, from mac, IPv4
	return append(eth, ipv4UDP(netip.AddrPortFrom(netip.IPv4Unspecified(), clientPort), netip.AddrPortFrom(broadcast.Addr(), serverPort), payload)...)
}

// requestOffered sends the REQUEST for offer as a client in SELECTING
// does, again each second until answered (10 tries), and returns the
// reply, or nil.
func requestOffered(t *testing.T, conn net.PacketConn, offer *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Error(err)
		return nil
	}
	for range 10 {
		if b := exchange(t, conn, req.ToBytes(), req.TransactionID, "255.255.255.255:67", time.Second); b != nil {
			m, err := dhcpv4.FromBytes(b)
			if err != nil {
				t.Errorf("reply does not parse: %v", err)
			}
			return m
		}
	}
	return nil
}

// TestFloodServer is the server TestFlood starts; on its own it skips.
func TestFloodServer(t *testing.T) {
	if os.Getenv(floodServerEnv) == "" {
		t.Skip("the server of TestFlood, started by it")
	}
	policy := newTestPolicy(pxe.Host{Name: "known", MAC: floodKnownMAC, IP: net.ParseIP("192.0.2.50")})
	// Every flood packet is a failed offer once the pool is full: a
	// warning each, too many to print.
	var mu sync.Mutex
	answers := map[string]int{}
	cfg := labConfig()
	cfg.Observe = func(msgType, result string) {
		mu.Lock()
		answers[msgType+" "+result]++
		mu.Unlock()
	}
	srv, err := NewServer(cfg, policy, nil, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	// And stop if TestFlood is gone without stopping it (killed).
	go func() {
		for parent := os.Getppid(); os.Getppid() == parent; {
			time.Sleep(100 * time.Millisecond)
		}
		stop()
	}()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := srv.Serve(ctx); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	st := floodStats{
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		CPUs:       set.Count(),
		Leases:     srv.h.leases.size(),
		RateTable:  srv.h.limit.size(),
		Answers:    answers,
		HeapGrowth: int64(after.HeapAlloc) - int64(before.HeapAlloc),
	}
	b, _ := json.Marshal(st)
	fmt.Printf("\n%s%s\n", floodStatsPrefix, b)
}

// allowedCPUs returns the CPUs this process may run on.
func allowedCPUs(t *testing.T) []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for c := 0; c < len(set)*64 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// cpuTicks returns the CPU time process pid has used, in clock ticks
// (1/100 s).
func cpuTicks(t *testing.T, pid int) uint64 {
	st, err := procstat.Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.UTime + st.STime
}

// udpRcvbufErrors returns the UDP datagrams ns's kernel dropped because a
// socket's receive buffer was full.
func udpRcvbufErrors(t *testing.T, ns *pxetest.Netns) int64 {
	var snmp []byte
	if err := ns.Do(func() error {
		var err error
		snmp, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for line := range strings.Lines(string(snmp)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "RcvbufErrors" && i < len(f) {
				var n int64
				fmt.Sscan(f[i], &n)
				return n
			}
		}
	}
	t.Fatalf("no Udp RcvbufErrors in %s", snmp)
	return 0
}

// backlogDrops returns the packets the kernel dropped, on every CPU, for
// a full input backlog (/proc/net/softnet_stat's second column): where a
// veth's frames wait for their receiver.
func backlogDrops(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 1 {
			var n int64
			fmt.Sscanf(f[1], "%x", &n)
			sum += n
		}
	}
	return sum
}

// portDrops returns, for each link of ns, the frames it dropped sending
// (a veth counts there what its peer's backlog had no room for).
func portDrops(t *testing.T, ns *pxetest.Netns) map[string]int64 {
	out, err := ns.IP("-j", "-s", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Name  string `json:"ifname"`
		Stats struct {
			TX struct {
				Dropped int64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("ip -j -s link: %v", err)
	}
	drops := map[string]int64{}
	for _, l := range links {
		drops[l.Name] = l.Stats.TX.Dropped
	}
	return drops
}
