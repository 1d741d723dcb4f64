package tftp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/pin/tftp/v3/netascii"
	"golang.org/x/sys/unix"
)

// This file is metal's sender for read requests that ask for RFC 7440
// windowsize, which pin/tftp does not negotiate: the client acknowledges
// a window of blocks at a time instead of every block. Requests reach it
// through the window socket (steer.go); everything else stays with
// pin/tftp.

// TFTP opcodes (RFC 1350, 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// TFTP error codes (RFC 1350, 2347).
const (
	codeUndefined  = 0
	codeNotFound   = 1
	codeAccess     = 2
	codeUnknownTID = 5
)

// Limits of the negotiated options.
const (
	// DefaultMaxWindowSize caps windowsize when Config.MaxWindowSize is 0:
	// past a few dozen blocks a window gains little on a LAN and costs a
	// whole window resent after a loss.
	DefaultMaxWindowSize = 64
	minBlockSize         = 8     // RFC 2348
	maxBlockSize         = 65464 // RFC 2348
	maxWindowSize        = 65535 // RFC 7440
)

// option is one name and value of a request or an OACK.
type option struct{ name, value string }

// options are a request's or an OACK's options, in their order.
type options []option

// get returns the value of the named option, "" if absent.
func (os options) get(name string) string {
	for _, o := range os {
		if o.name == name {
			return o.value
		}
	}
	return ""
}

// request is a parsed read request.
type request struct {
	name, mode string
	// opts are in the client's order, names lower-cased (RFC 2347: they
	// are case insensitive); a repeated name keeps its first value.
	opts options
}

var errMalformed = errors.New("malformed request")

// parseRequest parses a read request: opcode, file name, mode, then
// option names and values, each NUL-terminated.
func parseRequest(p []byte) (request, error) {
	if len(p) < 2 || binary.BigEndian.Uint16(p) != opRRQ {
		return request{}, fmt.Errorf("%w: not a read request", errMalformed)
	}
	if len(p) == 2 || p[len(p)-1] != 0 {
		return request{}, fmt.Errorf("%w: not NUL-terminated", errMalformed)
	}
	f := bytes.Split(p[2:len(p)-1], []byte{0})
	if len(f) < 2 || len(f)%2 != 0 {
		return request{}, fmt.Errorf("%w: %d fields, want a name, a mode and pairs of options", errMalformed, len(f))
	}
	req := request{name: string(f[0]), mode: strings.ToLower(string(f[1]))}
	for i := 2; i < len(f); i += 2 {
		name := strings.ToLower(string(f[i]))
		if req.opts.get(name) == "" {
			req.opts = append(req.opts, option{name: name, value: string(f[i+1])})
		}
	}
	return req, nil
}

// params are what the server agreed to for one transfer.
type params struct {
	blksize int
	window  int
	timeout time.Duration
	// oack holds the options accepted, in the client's order; empty sends
	// no OACK and the transfer starts with DATA block 1 (RFC 2347).
	oack options
}

// negotiate answers a request's options: blksize capped at maxBlock,
// windowsize at maxWindow, timeout within RFC 2349's 1..255 s, tsize
// (the file's size, when known: not in netascii, which changes it).
// Values a client may not ask for leave their option out of the OACK.
func negotiate(req request, maxBlock, maxWindow int, size int64, timeout time.Duration) params {
	p := params{blksize: 512, window: 1, timeout: timeout}
	for _, o := range req.opts {
		n, err := strconv.Atoi(o.value)
		switch {
		case o.name == "blksize" && err == nil && n >= minBlockSize && n <= maxBlockSize:
			p.blksize = min(n, maxBlock)
			p.oack = append(p.oack, option{o.name, strconv.Itoa(p.blksize)})
		case o.name == "windowsize" && err == nil && n >= 1 && n <= maxWindowSize:
			p.window = min(n, maxWindow)
			p.oack = append(p.oack, option{o.name, strconv.Itoa(p.window)})
		case o.name == "timeout" && err == nil && n >= 1 && n <= 255:
			p.timeout = time.Duration(n) * time.Second
			p.oack = append(p.oack, option{o.name, o.value})
		case o.name == "tsize" && err == nil && size >= 0:
			p.oack = append(p.oack, option{o.name, strconv.FormatInt(size, 10)})
		}
	}
	return p
}

// serveWindows serves the window socket's requests and their transfers
// on loop until loop is closed, and then until the last transfer has
// ended. It runs on its own goroutine, which first enters the network
// namespace ns of the goroutine that serves (each transfer opens a
// socket of its own here, on the loop's thread). It closes conn.
func (s *Server) serveWindows(conn *net.UDPConn, loop *eventLoop, ns *os.File) {
	if err := enterNetns(ns); err != nil {
		// With the window socket closed, the steering program's answer
		// names no socket and the kernel hands every request to pin/tftp:
		// clients get lockstep transfers instead of none.
		s.log.Error("tftp windowsize disabled", "err", err)
		conn.Close()
		return
	}
	req, err := newRequestSocket(conn, s.log, func(pkt, oob []byte, from netip.AddrPort) {
		s.startWindowed(pkt, oob, from, conn, loop)
	})
	if err != nil {
		s.log.Error("tftp windowsize disabled", "err", err)
		conn.Close()
		return
	}
	reserveP()
	loop.run(req)
}

// startWindowed opens the transfer's socket (a new port: the server's
// transfer ID) and starts its transfer, which loop then drives. A panic
// in here is logged and the request dropped: the listener keeps serving.
func (s *Server) startWindowed(pkt, oob []byte, from netip.AddrPort, listener *net.UDPConn, loop *eventLoop) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("tftp handler panic", "client", from.String(),
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	local, dst, ifindex, ok := parsePktinfo(oob)
	if !ok || local != dst || dst.IsMulticast() {
		// A broadcast or multicast request: every socket of the port has
		// a copy, and pin/tftp answers it.
		return
	}
	req, err := parseRequest(pkt)
	if err != nil {
		s.log.Debug("tftp bad request", "client", from.String(), "err", err)
		return
	}
	maxBlock := s.mtuBlockSize(listener, ifindex, local.Is6())
	if s.cfg.MaxBlockSize > 0 {
		maxBlock = min(maxBlock, s.cfg.MaxBlockSize)
	}
	conn, err := openTransferSocket(local, ifindex)
	if err != nil {
		s.log.Warn("tftp transfer socket", "client", from.String(), "err", err)
		return
	}
	t := &windowTransfer{
		s:        s,
		conn:     conn,
		peer:     netip.AddrPortFrom(from.Addr().Unmap().WithZone(""), from.Port()),
		req:      req,
		maxBlock: maxBlock,
	}
	// The loop owns the socket from here, and closes it when the transfer
	// ends (also when begin has ended it already).
	loop.pending()
	go func() {
		t.begin()
		loop.add(t)
	}()
}

// parsePktinfo reads IP_PKTINFO or IPV6_PKTINFO: the local address a
// reply should come from, the datagram's destination (differs for IPv4
// broadcasts; IPv6 has only the destination) and the interface it came
// in on.
func parsePktinfo(oob []byte) (local, dst netip.Addr, ifindex int, ok bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		switch {
		// struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst, ipi_addr; }
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= 12:
			ifindex = int(int32(binary.NativeEndian.Uint32(m.Data[0:4])))
			local = netip.AddrFrom4([4]byte(m.Data[4:8]))
			dst = netip.AddrFrom4([4]byte(m.Data[8:12]))
			return local, dst, ifindex, true
		// struct in6_pktinfo { in6_addr ipi6_addr; int ipi6_ifindex; }
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= 20:
			dst = netip.AddrFrom16([16]byte(m.Data[0:16]))
			ifindex = int(int32(binary.NativeEndian.Uint32(m.Data[16:20])))
			return dst, dst, ifindex, true
		}
	}
	return
}

// mtuBlockSize is the largest block that fits the interface's MTU
// unfragmented (IPv4 and UDP headers take 28 bytes, IPv6 and UDP 48), or
// 512 if the interface cannot be asked. It asks the kernel by index with
// ioctls: listing all interfaces (net.InterfaceByIndex) fails while other
// programs add or remove some.
func (s *Server) mtuBlockSize(c *net.UDPConn, ifindex int, ipv6 bool) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 512
	}
	mtu := 0
	_ = rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return
		}
		ifr.SetUint32(uint32(ifindex))
		if unix.IoctlIfreq(int(fd), unix.SIOCGIFNAME, ifr) != nil {
			return
		}
		byName, err := unix.NewIfreq(ifr.Name())
		if err != nil || unix.IoctlIfreq(int(fd), unix.SIOCGIFMTU, byName) != nil {
			return
		}
		mtu = int(byName.Uint32())
	})
	headers := 28
	if ipv6 {
		headers = 48
	}
	if mtu-headers < 512 {
		return 512
	}
	return min(mtu-headers, maxBlockSize)
}

// windowTransfer is one read transfer, on its own socket: a state
// machine that sends what the client's last ACK asks for, or what its
// timer says to send again. begin starts it on a goroutine of its own
// (opening the file may wait on a generator); from then on the server's
// event loop (loop.go) drives it, with every other transfer in flight.
type windowTransfer struct {
	s        *Server
	conn     *transferSocket
	peer     netip.AddrPort
	req      request
	maxBlock int
	p        params
	pkt      []byte // the packet being sent
	rcv      []byte
	sent     int    // datagrams, for the options log line
	gso      bool   // send windows with UDP segmentation offload
	batch    []byte // the DATA packets of one segmented send

	start time.Time
	file  io.Closer
	// oack is the options packet until the client has acknowledged it,
	// nil after.
	oack []byte
	w    *window
	// retries counts timeouts in a row of the wait for the options' ACK,
	// then for each window's; resent is set once an ACK that moves
	// nothing had the window sent again, until progress.
	retries  int
	resent   bool
	deadline time.Time // of the wait for the client's next datagram
	done     bool
}

// Errors that end a transfer, for the log.
var (
	errTimeout    = errors.New("timed out waiting for an acknowledgement")
	errClientStop = errors.New("client sent an error")
)

// transferError ends a transfer with a result of its own in the log,
// not "failed".
type transferError struct {
	result string // the log's result: "refused", "not found", "error"
	err    error
}

func (e *transferError) Error() string { return e.err.Error() }

// recoverPanic ends the transfer on a panic in its handling, deferred:
// the server serves on.
func (t *windowTransfer) recoverPanic() {
	if p := recover(); p != nil {
		t.s.log.Error("tftp handler panic", "client", t.peer.String(), "file", t.req.name,
			"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		t.sendError(codeUndefined, errInternal.Error())
		t.finish(&transferError{"error", errors.New("panic")})
	}
}

// begin opens the file, negotiates, and sends the options or the first
// window.
func (t *windowTransfer) begin() {
	defer t.recoverPanic()
	s := t.s
	t.start = time.Now()
	f, fi, err := s.open(t.peer.Addr().Unmap(), t.req.name)
	if err != nil {
		result, code, clientErr := refusal(err)
		t.sendError(code, clientErr.Error())
		t.finish(&transferError{result, err})
		return
	}
	t.file = f
	size := fi.Size()
	if t.req.mode == "netascii" {
		size = -1
	}
	t.p = negotiate(t.req, t.maxBlock, s.cfg.MaxWindowSize, size, s.cfg.Timeout)
	// The window is refilled after every ACK: a read system call per
	// lockstep block unless the file is read in larger chunks, or is a
	// boot program held in memory.
	var r io.Reader = f
	if _, ok := fi.(bootProgram); ok {
		data, cached, err := s.boot.bytes(t.req.name, f, fi)
		if err != nil {
			t.sendError(codeUndefined, errInternal.Error())
			t.finish(&transferError{"error", err})
			return
		}
		if cached {
			r = bytes.NewReader(data)
		}
	}
	if _, ok := r.(*os.File); ok && t.p.blksize*t.p.window < readChunk {
		r = bufio.NewReaderSize(f, readChunk)
	}
	if t.req.mode == "netascii" {
		r = netascii.ToReader(r)
	}
	t.pkt = make([]byte, 4+t.p.blksize)
	t.gso = t.p.window > 1 && !s.noGSO
	// Only ACKs and ERRORs matter here: a longer datagram is cut short.
	t.rcv = make([]byte, 1024)
	t.w = &window{r: r, bs: t.p.blksize, buf: make([]byte, t.p.blksize*t.p.window)}
	if len(t.p.oack) > 0 {
		p := binary.BigEndian.AppendUint16(t.pkt[:0], opOACK)
		for _, o := range t.p.oack {
			p = append(append(append(append(p, o.name...), 0), o.value...), 0)
		}
		t.oack = bytes.Clone(p)
		t.sendOACK()
		return
	}
	t.firstWindow()
}

// finish ends the transfer, logs it and tells Observe, as the lockstep
// read handler does: err nil is the whole file acknowledged. The caller
// closes the socket.
func (t *windowTransfer) finish(err error) {
	if t.done {
		return
	}
	t.done = true
	if t.file != nil {
		t.file.Close()
	}
	var n int64
	if t.w != nil {
		n = t.w.acked
	}
	result, reason := "ok", ""
	if err != nil {
		result, reason = "failed", err.Error()
		var te *transferError
		if errors.As(err, &te) {
			result = te.result
		}
	}
	if t.w != nil {
		t.s.log.Debug("tftp transfer options", "sender", "metal", "client", t.peer.String(), "file", t.req.name,
			"mode", t.req.mode, "blksize", strconv.Itoa(t.p.blksize), "windowsize", t.p.oack.get("windowsize"),
			"tsize", t.p.oack.get("tsize"), "timeout", t.p.timeout.String(), "datagrams", t.sent)
	}
	t.s.logTransfer(t.peer.String(), t.req.name, n, time.Since(t.start), result, reason)
}

// readChunk is the least a transfer reads from its file at a time.
const readChunk = 64 << 10

// refusal maps an error from Server.open to the transfer's result, the
// TFTP error code and the message the client is sent.
func refusal(err error) (result string, code uint16, clientErr error) {
	switch {
	case errors.Is(err, bootfiles.ErrBadName):
		return "refused", codeAccess, errRefused
	case errors.Is(err, os.ErrNotExist):
		return "not found", codeNotFound, errNotFound
	case errors.Is(err, os.ErrPermission):
		// A generated file this client may not have.
		return "refused", codeAccess, errRefused
	default:
		return "error", codeUndefined, errInternal
	}
}

// sendOACK sends the accepted options, which the client acknowledges
// with ACK 0.
func (t *windowTransfer) sendOACK() {
	if err := t.send(t.oack); err != nil {
		t.finish(err)
		return
	}
	t.deadline = time.Now().Add(backoff(t.p.timeout, t.retries))
}

// firstWindow reads the first window and sends it.
func (t *windowTransfer) firstWindow() {
	if err := t.w.fill(); err != nil {
		t.sendError(codeUndefined, errInternal.Error())
		t.finish(fmt.Errorf("read: %w", err))
		return
	}
	t.sendWindow()
}

// sendWindow sends the window and waits for its ACK.
func (t *windowTransfer) sendWindow() {
	if err := t.sendBlocks(t.w); err != nil {
		t.finish(err)
		return
	}
	t.deadline = time.Now().Add(backoff(t.p.timeout, t.retries))
}

// expire handles the deadline passing without the datagram it waited
// for: the options or the window again, until the retries run out.
func (t *windowTransfer) expire() {
	t.retries++
	switch {
	case t.retries > t.s.cfg.Retries && t.oack != nil:
		t.finish(fmt.Errorf("%w of the options after %d tries", errTimeout, t.retries))
	case t.retries > t.s.cfg.Retries:
		t.sendError(codeUndefined, errTimeout.Error())
		t.finish(fmt.Errorf("%w of blocks %d..%d after %d tries", errTimeout, t.w.base+1, t.w.base+int64(t.w.blocks()), t.retries))
	case t.oack != nil:
		t.sendOACK()
	default:
		t.sendWindow()
	}
}

// handle takes the client's ACK or ERROR (block is then its code).
func (t *windowTransfer) handle(op, block uint16, msg string) {
	if op == opERROR {
		what := ""
		if t.oack != nil {
			what = " to the options"
		}
		t.finish(fmt.Errorf("%w%s: code %d: %s", errClientStop, what, block, msg))
		return
	}
	if t.oack != nil {
		if block == 0 {
			t.oack, t.retries = nil, 0
			t.firstWindow()
		}
		return
	}
	// An ACK that moves nothing (the client saw a gap, or timed out) asks
	// for the window again from the block after it; a second such ACK
	// before progress is one of the same burst and waits for the timer,
	// so a lost block does not multiply into many resent windows (nor a
	// duplicated ACK into duplicated blocks: Sorcerer's Apprentice).
	w := t.w
	a, ok := w.absolute(block)
	switch {
	case !ok: // an old ACK, from before the window
	case a == w.base && t.resent:
	case a == w.base:
		t.resent = true
		t.sendWindow()
	case w.eof && a == w.base+int64(w.blocks()):
		w.acked += int64(w.filled)
		t.finish(nil)
	default:
		if err := w.advance(a); err != nil {
			t.sendError(codeUndefined, errInternal.Error())
			t.finish(fmt.Errorf("read: %w", err))
			return
		}
		t.retries, t.resent = 0, false
		t.sendWindow()
	}
}

// backoff is how long to wait for an ACK after the given number of
// timeouts in a row: twice as long each time, up to 4 times the timeout.
// The silence matters: some clients (atftp) answer a window sent again
// with one ACK only and then ignore further copies until their own timer
// runs out, which copies sent at a steady pace would keep from happening.
func backoff(timeout time.Duration, retries int) time.Duration {
	return timeout << min(retries, 2)
}

// sendBlocks sends every block the window holds, from the one after the
// last acknowledged: with UDP segmentation offload (GSO) several blocks
// in one system call, which the kernel cuts into datagrams of one block
// each; one call per block if the kernel refuses it.
func (t *windowTransfer) sendBlocks(w *window) error {
	for k := 0; k < w.blocks(); {
		n := 1
		if t.gso {
			n = min(w.blocks()-k, gsoBatch(t.p.blksize))
		}
		batch := t.batch[:0]
		for i := k; i < k+n; i++ {
			batch = binary.BigEndian.AppendUint16(batch, opDATA)
			batch = binary.BigEndian.AppendUint16(batch, uint16(w.base+1+int64(i)))
			batch = append(batch, w.block(i)...)
		}
		t.batch = batch
		if n == 1 {
			if err := t.send(batch); err != nil {
				return err
			}
			k++
			continue
		}
		if err := t.conn.sendMsg(batch, gsoCmsg(4+t.p.blksize), t.peer); err != nil {
			// EIO or EINVAL: a route or device without the offload.
			// Plain sends from here on.
			t.s.log.Debug("tftp segmentation offload off", "client", t.peer.String(), "err", err)
			t.gso = false
			continue
		}
		t.sent += n
		k += n
	}
	return nil
}

// gsoBatch is how many blocks go in one segmented send: at most 64
// segments (the kernel's UDP_MAX_SEGMENTS) and 65507 bytes (one UDP
// datagram's payload).
func gsoBatch(blksize int) int {
	return max(1, min(64, 65507/(4+blksize)))
}

// gsoCmsg is the control message that asks the kernel to cut a send into
// datagrams of size bytes (UDP_SEGMENT).
func gsoCmsg(size int) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b
}

func (t *windowTransfer) send(p []byte) error {
	t.sent++
	if err := t.conn.sendTo(p, t.peer); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// sendError tells the client why the transfer ends; best effort.
func (t *windowTransfer) sendError(code uint16, msg string) {
	_ = t.conn.sendTo(errorPacket(code, msg), t.peer)
}

func errorPacket(code uint16, msg string) []byte {
	p := binary.BigEndian.AppendUint16(nil, opERROR)
	p = binary.BigEndian.AppendUint16(p, code)
	return append(append(p, msg...), 0)
}

// datagram takes one datagram the transfer's socket received, in t.rcv.
// One from any other address or port is answered with ERROR 5 and
// otherwise ignored (RFC 1350): it must not end or slow the transfer.
func (t *windowTransfer) datagram(n int, from netip.AddrPort) {
	if from != t.peer {
		_ = t.conn.sendTo(errorPacket(codeUnknownTID, "unknown transfer ID"), from)
		return
	}
	if n < 4 {
		return
	}
	switch op := binary.BigEndian.Uint16(t.rcv); op {
	case opACK:
		t.handle(op, binary.BigEndian.Uint16(t.rcv[2:]), "")
	case opERROR:
		msg, _, _ := bytes.Cut(t.rcv[4:n], []byte{0})
		t.handle(op, binary.BigEndian.Uint16(t.rcv[2:]), string(msg))
	}
}

// window holds the blocks in flight: the blocks after base, the last
// acknowledged, up to a window's worth, read ahead from the file. Every
// block is full but the last, which is short (maybe empty) once eof.
type window struct {
	r      io.Reader
	bs     int
	buf    []byte // bs × windowsize
	filled int
	eof    bool
	base   int64 // absolute number of the last acknowledged block
	acked  int64 // bytes in blocks 1..base
}

// blocks is how many blocks the window holds: all full ones, and the
// last (short or empty) once the file has ended.
func (w *window) blocks() int {
	if w.eof {
		return w.filled/w.bs + 1
	}
	return w.filled / w.bs
}

// block returns the k-th block after base.
func (w *window) block(k int) []byte {
	lo := k * w.bs
	return w.buf[lo:min(lo+w.bs, w.filled)]
}

// fill reads until the window is full or the file ends.
func (w *window) fill() error {
	if w.eof {
		return nil
	}
	n, err := io.ReadFull(w.r, w.buf[w.filled:])
	w.filled += n
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		w.eof = true
		return nil
	}
	return err
}

// absolute maps an ACK's 16-bit block number (they wrap past 65535 to 0)
// to the absolute block in base..base+blocks() it names, if any.
func (w *window) absolute(block uint16) (int64, bool) {
	a := w.base + int64(block-uint16(w.base))
	return a, a <= w.base+int64(w.blocks())
}

// advance drops the blocks up to a, which the client has, and reads on.
func (w *window) advance(a int64) error {
	cut := min(int(a-w.base)*w.bs, w.filled)
	w.acked += int64(cut)
	copy(w.buf, w.buf[cut:w.filled])
	w.filled -= cut
	w.base = a
	return w.fill()
}
