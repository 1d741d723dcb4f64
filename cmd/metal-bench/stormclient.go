package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// The storm's clients run in a child process inside the lab's client
// namespace (metal-bench re-runs itself there through `ip netns exec`):
// every socket they open, net/http's own dials included, is then in that
// namespace, which a goroutine that entered it could not promise.

// stormClientEnv, set to 1, makes metal-bench (or its test binary) the
// storm's client process: it reads a stormOrder on stdin and writes a
// stormReport on stdout.
const stormClientEnv = "METAL_BENCH_STORM_CLIENT"

// stormOrder is what the client process is told to do.
type stormOrder struct {
	Iface    string        `json:"iface"`    // its interface, where DHCP is broadcast
	Machines []stormMember `json:"machines"` // the machines that power on
	Probe    stormMember   `json:"probe"`    // a machine that checks the servers answer first
	HTTP     string        `json:"http"`     // server's HTTP address, for the readiness check
	Spread   time.Duration `json:"spread"`   // machines start evenly within it
	GiveUp   time.Duration `json:"give_up"`  // a machine not done by then is lost
	// Sizes are the lengths the kernel and initrd must have.
	KernelSize int64 `json:"kernel_size"`
	InitrdSize int64 `json:"initrd_size"`
}

// stormMember is one simulated machine: its MAC and the address it is
// reserved (the client namespace holds every such address, so that a
// machine speaks TFTP and HTTP from its own lease).
type stormMember struct {
	MAC string `json:"mac"`
	IP  string `json:"ip"`
}

// stormReport is the client process's answer: one entry per machine, in
// order.
type stormReport struct {
	Machines []stormMachine `json:"machines"`
}

// stormMachine is one machine's boot: when it started and ended (from the
// storm's start) and how long each step took; Err when it never finished.
type stormMachine struct {
	Start time.Duration `json:"start"`
	End   time.Duration `json:"end"`
	// Steps: DHCP as the PXE ROM, TFTP of the boot program, DHCP as
	// iPXE, the script, then kernel and initrd.
	Steps [stormSteps]time.Duration `json:"steps"`
	Err   string                    `json:"err,omitempty"`
}

const stormSteps = 5

var stormStepNames = [stormSteps]string{"dhcp", "tftp", "dhcp_ipxe", "script", "kernel_initrd"}

// stormClientMain is the client process: it says when the servers answer
// (a line {"Ready":true}), then runs the storm and writes its report.
func stormClientMain() {
	var o stormOrder
	if err := json.NewDecoder(os.Stdin).Decode(&o); err != nil {
		fatal(fmt.Errorf("storm client: order: %w", err))
	}
	enc := json.NewEncoder(os.Stdout)
	rep, err := runStormClients(context.Background(), o, func() error { return enc.Encode(struct{ Ready bool }{true}) })
	if err != nil {
		fatal(fmt.Errorf("storm client: %w", err))
	}
	if err := enc.Encode(rep); err != nil {
		fatal(err)
	}
}

// runStormClients checks the servers answer, calls ready, and runs the
// storm.
func runStormClients(ctx context.Context, o stormOrder, ready func() error) (stormReport, error) {
	conn, err := clientSocket(o.Iface)
	if err != nil {
		return stormReport{}, fmt.Errorf("dhcp socket: %w", err)
	}
	defer conn.Close()
	d := newDHCPDispatch(conn)
	go d.run()

	// Ready: the probe machine gets its lease and its boot program, and
	// the HTTP server takes a connection.
	probe, err := newStormBoot(d, o.Probe, o)
	if err != nil {
		return stormReport{}, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := probe.ready(ctx, o.HTTP)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return stormReport{}, fmt.Errorf("servers not ready after 60 s: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if err := ready(); err != nil {
		return stormReport{}, err
	}
	rep := stormReport{Machines: make([]stormMachine, len(o.Machines))}
	boots := make([]*stormBoot, len(o.Machines))
	for i, m := range o.Machines {
		if boots[i], err = newStormBoot(d, m, o); err != nil {
			return stormReport{}, err
		}
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, b := range boots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := o.Spread * time.Duration(i) / time.Duration(len(boots))
			time.Sleep(time.Until(t0.Add(at)))
			r := &rep.Machines[i]
			r.Start = time.Since(t0)
			bctx, cancel := context.WithTimeout(ctx, o.GiveUp)
			defer cancel()
			if err := b.boot(bctx, &r.Steps); err != nil {
				r.Err = err.Error()
			}
			r.End = time.Since(t0)
		}()
	}
	wg.Wait()
	return rep, nil
}

// dhcpDispatch shares one port-68 socket among every simulated machine:
// replies are broadcast (the machines ask for it, as they have no address
// yet) and go to whoever waits for their transaction ID.
type dhcpDispatch struct {
	conn    net.PacketConn
	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

func newDHCPDispatch(conn net.PacketConn) *dhcpDispatch {
	return &dhcpDispatch{conn: conn, waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
}

func (d *dhcpDispatch) run() {
	buf := make([]byte, 1500)
	for {
		n, _, err := d.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		d.mu.Lock()
		ch := d.waiting[m.TransactionID]
		d.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default: // a duplicate the machine is not waiting for
			}
		}
	}
}

// exchange broadcasts m until a reply of type want comes, waiting 1 s,
// then 2, 4 and at most 8 before each retransmission (iPXE's DHCP
// timers), until ctx ends.
func (d *dhcpDispatch) exchange(ctx context.Context, m *dhcpv4.DHCPv4, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	d.mu.Lock()
	d.waiting[m.TransactionID] = ch
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.waiting, m.TransactionID)
		d.mu.Unlock()
	}()
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	wait := time.Second
	for {
		if _, err := d.conn.WriteTo(m.ToBytes(), dst); err != nil {
			return nil, err
		}
		t := time.NewTimer(wait)
	recv:
		for {
			select {
			case r := <-ch:
				if r.MessageType() == want {
					t.Stop()
					return r, nil
				}
				if r.MessageType() == dhcpv4.MessageTypeNak {
					t.Stop()
					return nil, fmt.Errorf("DHCPNAK to %s", m.MessageType())
				}
			case <-t.C:
				break recv
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("no %s: %w", want, ctx.Err())
			}
		}
		wait = min(2*wait, 8*time.Second)
	}
}

// dora is a DISCOVER, OFFER, REQUEST, ACK for mac with the options mods
// add to both requests, as a PXE ROM or iPXE sends them.
func (d *dhcpDispatch) dora(ctx context.Context, mac net.HardwareAddr, mods ...dhcpv4.Modifier) (*dhcpv4.DHCPv4, error) {
	mods = append(mods, dhcpv4.WithBroadcast(true))
	disc, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		return nil, err
	}
	offer, err := d.exchange(ctx, disc, dhcpv4.MessageTypeOffer)
	if err != nil {
		return nil, err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		return nil, err
	}
	return d.exchange(ctx, req, dhcpv4.MessageTypeAck)
}

// The options a BIOS PXE ROM sends (PXE 2.1: vendor class, client
// architecture 0, UNDI 2.1, a machine GUID), and those iPXE adds once it
// runs: its user class and its encapsulated feature options (175).
var (
	pxeVendorClass = "PXEClient:Arch:00000:UNDI:002001"
	ipxeFeatures   = []byte{0x13, 1, 1, 0x10, 1, 2} // HTTP, PXE extensions
)

func pxeOptions(mac net.HardwareAddr) []dhcpv4.Modifier {
	guid := make([]byte, 17) // type 0, then a UUID made from the MAC
	copy(guid[11:], mac)
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(pxeVendorClass)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1})),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid)),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionTFTPServerName,
			dhcpv4.OptionBootfileName, dhcpv4.OptionVendorSpecificInformation, dhcpv4.OptionClassIdentifier),
	}
}

func ipxeOptions(mac net.HardwareAddr) []dhcpv4.Modifier {
	return append(pxeOptions(mac),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))),
		dhcpv4.WithOption(dhcpv4.OptGeneric(optionIPXEEncap, ipxeFeatures)))
}

const optionIPXEEncap = dhcpv4.GenericOptionCode(175)

// stormBoot is one simulated machine.
type stormBoot struct {
	d     *dhcpDispatch
	mac   net.HardwareAddr
	ip    net.IP
	order *stormOrder
	http  *http.Client
	buf   []byte
}

func newStormBoot(d *dhcpDispatch, m stormMember, o stormOrder) (*stormBoot, error) {
	mac, err := net.ParseMAC(m.MAC)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(m.IP).To4()
	if ip == nil {
		return nil, fmt.Errorf("machine %s: bad address %q", m.MAC, m.IP)
	}
	// One kept-alive connection from the machine's own address, as iPXE
	// fetches its script, kernel and initrd.
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	tr := &http.Transport{DialContext: dialer.DialContext, MaxConnsPerHost: 1, DisableCompression: true}
	return &stormBoot{d: d, mac: mac, ip: ip, order: &o, http: &http.Client{Transport: tr}, buf: make([]byte, 64<<10)}, nil
}

// ready checks the servers answer: a plain DHCP client's lease, the boot
// program over TFTP, and an HTTP connection.
func (b *stormBoot) ready(ctx context.Context, httpAddr string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ack, err := b.d.dora(ctx, b.mac, pxeOptions(b.mac)...)
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	if err := b.tftp(ctx, ack); err != nil {
		return err
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", httpAddr)
	if err != nil {
		return err
	}
	return c.Close()
}

// boot runs the machine's netboot to the kernel's start, timing each step.
func (b *stormBoot) boot(ctx context.Context, steps *[stormSteps]time.Duration) error {
	defer b.http.CloseIdleConnections()
	step, t := 0, time.Now()
	done := func() {
		now := time.Now()
		steps[step], step, t = now.Sub(t), step+1, now
	}
	ack, err := b.d.dora(ctx, b.mac, pxeOptions(b.mac)...)
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	if !ack.YourIPAddr.Equal(b.ip) {
		return fmt.Errorf("dhcp: leased %s, reserved %s", ack.YourIPAddr, b.ip)
	}
	done()
	if err := b.tftp(ctx, ack); err != nil {
		return err
	}
	done()
	ack, err = b.d.dora(ctx, b.mac, ipxeOptions(b.mac)...)
	if err != nil {
		return fmt.Errorf("dhcp as iPXE: %w", err)
	}
	done()
	script, err := url.Parse(bootFile(ack))
	if err != nil || script.Scheme != "http" {
		return fmt.Errorf("dhcp as iPXE: boot file %q is no http URL", bootFile(ack))
	}
	kernel, initrds, err := b.script(ctx, script, 0)
	if err != nil {
		return err
	}
	done()
	if err := b.get(ctx, kernel, b.order.KernelSize); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	for _, u := range initrds {
		if err := b.get(ctx, u, b.order.InitrdSize); err != nil {
			return fmt.Errorf("initrd: %w", err)
		}
	}
	done()
	return nil
}

// bootFile is the boot file an answer names: option 67, else the header's
// file field.
func bootFile(m *dhcpv4.DHCPv4) string {
	if f := m.BootFileNameOption(); f != "" {
		return f
	}
	return m.BootFileName
}

// script fetches an iPXE script and follows it as iPXE would, far enough
// to know what it boots: chain goes to another script (${netX/mac} and
// ${mac} are this machine's MAC); kernel and initrd name the files.
func (b *stormBoot) script(ctx context.Context, u *url.URL, depth int) (*url.URL, []*url.URL, error) {
	if depth > 3 {
		return nil, nil, errors.New("script: chained more than 3 times")
	}
	body, err := b.fetch(ctx, u.String())
	if err != nil {
		return nil, nil, fmt.Errorf("script: %w", err)
	}
	if !bytes.HasPrefix(body, []byte("#!ipxe")) {
		return nil, nil, fmt.Errorf("script %s: no #!ipxe: %.80q", u, body)
	}
	var kernel *url.URL
	var initrds []*url.URL
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		var target string
		switch f[0] {
		case "chain", "kernel":
			target = f[1]
		case "initrd":
			target = f[len(f)-1]
		default:
			continue
		}
		mac := b.mac.String()
		target = strings.NewReplacer("${netX/mac}", mac, "${net0/mac}", mac, "${mac}", mac).Replace(target)
		ref, err := u.Parse(target)
		if err != nil {
			return nil, nil, fmt.Errorf("script %s: %s: %w", u, f[0], err)
		}
		switch f[0] {
		case "chain":
			return b.script(ctx, ref, depth+1)
		case "kernel":
			kernel = ref
		case "initrd":
			initrds = append(initrds, ref)
		}
	}
	if kernel == nil {
		return nil, nil, fmt.Errorf("script %s boots no kernel: %.200q", u, body)
	}
	return kernel, initrds, nil
}

// fetch GETs a small answer whole.
func (b *stormBoot) fetch(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return body, err
}

// get downloads u and checks its length.
func (b *stormBoot) get(ctx context.Context, u *url.URL, want int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	n, err := drain(resp.Body, b.buf)
	if err != nil {
		return fmt.Errorf("GET %s after %d bytes: %w", u, n, err)
	}
	if n != want {
		return fmt.Errorf("GET %s: %d bytes, want %d", u, n, want)
	}
	return nil
}

// tftp fetches the boot program the DHCP answer names from its next
// server, from the machine's own address, as a PXE ROM does: lockstep,
// blksize 1456 (what iPXE asks for), tsize asked, each packet sent again
// after 1 s without an answer, up to 8 times.
func (b *stormBoot) tftp(ctx context.Context, ack *dhcpv4.DHCPv4) error {
	name := bootFile(ack)
	server := ack.ServerIPAddr
	if name == "" || server == nil || server.IsUnspecified() {
		return fmt.Errorf("tftp: the DHCP answer names no boot file (%q) or next server (%v)", name, server)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: b.ip})
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	defer conn.Close()
	const blksize = 1456
	var rrq []byte
	rrq = binary.BigEndian.AppendUint16(rrq, 1)
	for _, s := range []string{name, "octet", "blksize", strconv.Itoa(blksize), "tsize", "0"} {
		rrq = append(append(rrq, s...), 0)
	}
	dst := &net.UDPAddr{IP: server, Port: 69}
	out := rrq
	var peer *net.UDPAddr // the transfer's port, from its first answer
	buf := make([]byte, 4+blksize+64)
	size := 512
	next := uint16(1)
	for tries := 0; ; {
		if _, err := conn.WriteToUDP(out, dst); err != nil {
			return fmt.Errorf("tftp %s: %w", name, err)
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := conn.ReadFromUDP(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if tries++; tries > 8 || ctx.Err() != nil {
				return fmt.Errorf("tftp %s: no answer after %d tries (block %d)", name, tries, next)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("tftp %s: %w", name, err)
		}
		if peer != nil && (from.Port != peer.Port || !from.IP.Equal(peer.IP)) || n < 4 {
			continue
		}
		tries = 0
		switch op := binary.BigEndian.Uint16(buf); op {
		case 6: // OACK
			if peer != nil {
				continue
			}
			peer, dst = from, from
			if v, ok := tftpOption(buf[2:n], "blksize"); ok {
				if size, err = strconv.Atoi(v); err != nil {
					return fmt.Errorf("tftp %s: OACK blksize %q", name, v)
				}
			}
			out = []byte{0, 4, 0, 0}
		case 3: // DATA
			if peer == nil {
				peer, dst = from, from
			}
			block := binary.BigEndian.Uint16(buf[2:])
			out = []byte{0, 4, byte(block >> 8), byte(block)}
			if block != next {
				continue // a duplicate: ACK it again
			}
			next++
			if n-4 < size {
				conn.WriteToUDP(out, dst)
				return nil
			}
		case 5: // ERROR
			return fmt.Errorf("tftp %s: error %q", name, bytes.TrimRight(buf[4:n], "\x00"))
		default:
			return fmt.Errorf("tftp %s: opcode %d", name, op)
		}
	}
}

// tftpOption finds an option's value in an OACK's "name\0value\0" pairs.
func tftpOption(b []byte, name string) (string, bool) {
	f := strings.Split(string(b), "\x00")
	for i := 0; i+1 < len(f); i += 2 {
		if strings.EqualFold(f[i], name) {
			return f[i+1], true
		}
	}
	return "", false
}
