// Package tftp is metal's read-only TFTP server. It serves the iPXE
// binaries (the first thing a PXE ROM fetches) and, optionally, a directory
// of per-machine files. It knows nothing of machines or policy: DHCP names
// the file, this package only hands it over, and refuses any name that could
// lead outside what it serves.
package tftp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/internal/latch"
	"github.com/metal-dev/metal/pxe/bootfiles"
	tftplib "github.com/pin/tftp/v3"
	"golang.org/x/sys/unix"
)

// Config is the TFTP server's configuration. Zero values are the defaults.
type Config struct {
	// Addr is the UDP listen address; default ":69", IPv4's and IPv6's
	// (Serve).
	Addr string
	// IPXE holds the iPXE binaries (bootfiles.BIOS etc.). Their names are
	// served first, whatever Root holds. Nil serves none.
	IPXE *bootfiles.IPXE
	// Root is an optional directory of further files (per-machine files).
	Root *bootfiles.Root
	// Mounts serve more directories, each under a first path element
	// ("files" serves files/x from its Root), as metal's HTTP server
	// serves /files/ and /images/: a boot program that cannot speak
	// HTTP (Debian's signed GRUB) fetches the same paths over TFTP.
	Mounts map[string]*bootfiles.Root
	// Generated, when set, is asked first for every name: files made per
	// request for the client asking (a machine's GRUB config).
	Generated Generator
	// MaxBlockSize caps the blksize option a client may negotiate (RFC
	// 2348). metal's sender also caps it at what fits the interface's
	// MTU (less 28 bytes of headers on IPv4, 48 on IPv6), so the default
	// (0, no cap of our own) never fragments; pin/tftp, which keeps
	// lockstep requests only when Anticipate is on, at the MTU less 28.
	MaxBlockSize int
	// Timeout is how long to wait for an ACK before resending a block;
	// default 2 s. Retries is how often to resend; default 5.
	Timeout time.Duration
	Retries int
	// MaxWindowSize caps the windowsize option (RFC 7440) a client may
	// negotiate; default DefaultMaxWindowSize. pin/tftp does not
	// negotiate windowsize, so read requests are served by metal's own
	// sender (window.go) from a second socket on the same port, lockstep
	// ones too unless Anticipate is on; write requests go to pin/tftp,
	// which refuses them. 1 turns windowsize off: every request goes to
	// pin/tftp and is answered without it (lockstep).
	MaxWindowSize int
	// Anticipate, when > 1, sends that many blocks before waiting for
	// their ACKs: pin/tftp's non-standard "sender anticipate", for
	// clients that ask for no windowsize (their requests then stay with
	// pin/tftp). Off by default: it is the
	// library's experimental path, and it resends the whole window when
	// one block is lost.
	Anticipate uint
	// Logger receives one line per transfer; default slog.Default().
	Logger *slog.Logger
	// Observe, when set, is told of every read or write request once it
	// ends: its result ("ok", "not found", "refused", "failed", "error")
	// and the bytes sent. Metrics count them; it must be quick.
	Observe func(result string, bytes int64)
}

// Generator makes files that exist only when a client asks: their content
// may depend on who asks. It is the policy's side of per-machine files.
type Generator interface {
	// Generate returns the content of name (a clean relative path) for
	// the client at client, or an error wrapping fs.ErrNotExist when it
	// makes no such file, so the name is looked for elsewhere.
	Generate(ctx context.Context, client netip.Addr, name string) ([]byte, error)
}

// Server is a read-only TFTP server.
type Server struct {
	cfg Config
	log *slog.Logger
	// open resolves a requested name; a field so tests can make it fail in
	// ways a file system will not (a panic).
	open func(client netip.Addr, name string) (*os.File, fs.FileInfo, error)
	// noGSO sends windows a datagram per system call, as on a kernel
	// without UDP segmentation offload; for tests of that path.
	noGSO bool
	// listening is closed once the socket is open (Listening).
	listening latch.Latch
	// boot holds the iPXE binaries' bytes (cache.go).
	boot bootCache
}

// Errors sent to clients, in TFTP error packets. They say what happened
// without echoing paths of the server's file system.
var (
	errNotFound  = errors.New("file not found")
	errRefused   = errors.New("access violation: file name refused")
	errReadOnly  = errors.New("access violation: this server is read-only")
	errInternal  = errors.New("internal server error")
	errNoSources = errors.New("tftp: config has neither IPXE nor Root: nothing to serve")
)

// New checks cfg and returns a server; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.IPXE == nil && cfg.Root == nil && len(cfg.Mounts) == 0 && cfg.Generated == nil {
		return nil, errNoSources
	}
	if cfg.Addr == "" {
		cfg.Addr = ":69"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.MaxBlockSize != 0 && (cfg.MaxBlockSize < 512 || cfg.MaxBlockSize > 65464) {
		return nil, fmt.Errorf("tftp: max block size %d outside 512..65464", cfg.MaxBlockSize)
	}
	switch {
	case cfg.MaxWindowSize == 0:
		cfg.MaxWindowSize = DefaultMaxWindowSize
	case cfg.MaxWindowSize < 1 || cfg.MaxWindowSize > maxWindowSize:
		return nil, fmt.Errorf("tftp: max window size %d outside 1..%d", cfg.MaxWindowSize, maxWindowSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("server", "tftp")}
	s.open = s.openFile
	return s, nil
}

// Serve listens on cfg.Addr and serves until ctx is done. It returns nil
// after a cancel, once transfers in flight have finished or timed out.
//
// An address without a host (":69") is both IPv4's and IPv6's: UEFI's
// PXE over IPv6 fetches its boot program by TFTP too, and windowsize
// works alike on both.
func (s *Server) Serve(ctx context.Context) error {
	conns, err := s.listen()
	if err != nil {
		return err
	}
	if len(conns) == 1 {
		return s.ServeConn(ctx, conns[0])
	}
	// The IPv6 socket's loop opens a socket per transfer, so its goroutine
	// joins this one's network namespace first (see ServeConn).
	ns, err := threadNetns()
	if err != nil {
		conns[0].Close()
		conns[1].Close()
		return fmt.Errorf("tftp: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done6 := make(chan error, 1)
	go func() {
		defer ns.Close()
		defer cancel()
		if err := enterNetns(ns); err != nil {
			conns[1].Close()
			done6 <- fmt.Errorf("tftp over IPv6: %w", err)
			return
		}
		done6 <- s.ServeConn(ctx, conns[1])
	}()
	err = s.ServeConn(ctx, conns[0])
	cancel()
	return errors.Join(err, <-done6)
}

// listen opens the server's sockets: one for an address with a host, an
// IPv4 and an IPv6 one on the same port for an address without. A host
// without IPv6 (ipv6.disable=1) is served on IPv4 alone.
func (s *Server) listen() ([]net.PacketConn, error) {
	host, _, err := net.SplitHostPort(s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("tftp listen: %w", err)
	}
	if host != "" {
		network := "udp4"
		if a, err := netip.ParseAddr(host); err == nil && a.Is6() && !a.Is4In6() {
			network = "udp6"
		}
		conn, err := net.ListenPacket(network, s.cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("tftp listen: %w", err)
		}
		return []net.PacketConn{conn}, nil
	}
	conn4, err := net.ListenPacket("udp4", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("tftp listen: %w", err)
	}
	// The port IPv4 got, so that ":0" is one port on both.
	port := conn4.LocalAddr().(*net.UDPAddr).Port
	conn6, err := net.ListenPacket("udp6", net.JoinHostPort("::", strconv.Itoa(port)))
	switch {
	case errors.Is(err, unix.EAFNOSUPPORT):
		s.log.Warn("tftp: no IPv6 on this host; serving IPv4 only", "err", err)
		return []net.PacketConn{conn4}, nil
	case err != nil:
		conn4.Close()
		return nil, fmt.Errorf("tftp listen on IPv6: %w", err)
	}
	return []net.PacketConn{conn4, conn6}, nil
}

// Listening is closed once Serve or ServeConn has its socket.
func (s *Server) Listening() <-chan struct{} { return s.listening.Done() }

// ServeConn serves on an open socket (tests bind 127.0.0.1:0) until ctx is
// done. It closes conn.
func (s *Server) ServeConn(ctx context.Context, conn net.PacketConn) error {
	s.listening.Close()
	srv := tftplib.NewServer(s.read, s.write)
	srv.SetTimeout(s.cfg.Timeout)
	srv.SetRetries(s.cfg.Retries)
	if s.cfg.MaxBlockSize > 512 {
		srv.SetBlockSize(s.cfg.MaxBlockSize)
	}
	srv.SetAnticipate(s.cfg.Anticipate)
	srv.SetHook(hook{log: s.log})

	// Windowed read requests come in on a second socket of the same port
	// (steer.go). Without it every request is pin/tftp's, lockstep.
	var windows sync.WaitGroup
	wconn, scan := s.windowSocket(conn)
	var loop *eventLoop
	if wconn != nil {
		// The window socket's transfers open sockets on another goroutine,
		// which joins this one's network namespace.
		ns, err := threadNetns()
		if err == nil {
			if loop, err = newEventLoop(); err != nil {
				ns.Close()
			}
		}
		if err != nil {
			wconn.Close()
			s.log.Warn("tftp windowsize disabled", "err", err)
			wconn = nil
		} else {
			windows.Add(1)
			go func() {
				defer windows.Done()
				defer ns.Close()
				s.serveWindows(wconn, loop, ns)
			}()
		}
	}
	// The loop closes the window socket when it sees this.
	closeWindows := func() {
		if loop != nil {
			loop.close()
		}
	}

	window, lockstep := "off", "pin/tftp"
	if wconn != nil {
		window = strconv.Itoa(s.cfg.MaxWindowSize)
		if scan == 0 {
			lockstep = "metal"
		}
	}
	s.log.Info("tftp serving", "addr", conn.LocalAddr().String(), "max_windowsize", window,
		"windowsize_scan", scan, "lockstep_sender", lockstep)

	// The library's loop runs on this goroutine, not a new one: it opens a
	// socket per transfer, and a caller that put this goroutine's thread
	// into a network namespace (a test lab, a daemon serving one
	// interface's namespace) needs those sockets there too. A helper
	// goroutine only waits for ctx.
	stopped := make(chan struct{})
	shutdown := make(chan struct{})
	go func() {
		defer close(shutdown)
		select {
		case <-ctx.Done():
			closeWindows()
			// Shutdown closes conn and waits for transfers in flight.
			srv.Shutdown()
		case <-stopped:
		}
	}()
	err := srv.Serve(conn)
	close(stopped)
	<-shutdown
	conn.Close()
	closeWindows()
	windows.Wait()
	if loop != nil {
		loop.release()
	}
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tftp serve: %w", err)
	}
	return errors.New("tftp serve: stopped unexpectedly")
}

// windowSocket opens the socket for windowed requests beside conn and
// says how many bytes of a request its steering scans, or returns nil
// (windowsize off, or conn is not a UDP socket it can share).
func (s *Server) windowSocket(conn net.PacketConn) (*net.UDPConn, int) {
	if s.cfg.MaxWindowSize <= 1 {
		return nil, 0
	}
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		s.log.Warn("tftp windowsize disabled", "err", fmt.Sprintf("cannot share a %T's port", conn))
		return nil, 0
	}
	wconn, scan, err := listenWindowSocket(uc, s.cfg.Anticipate <= 1)
	if err != nil {
		s.log.Warn("tftp windowsize disabled", "err", err)
		return nil, 0
	}
	return wconn, scan
}

// openFile maps a requested name to a file: a generated file for this
// client, an iPXE binary by its exact name, a file of the mount named by
// its first element, else a file under Root. A leading slash is dropped:
// GRUB asks for absolute paths ("/grub/grub.cfg", "/files/vmlinuz"),
// which are taken from what is served, as tftpd -s does.
func (s *Server) openFile(client netip.Addr, name string) (*os.File, fs.FileInfo, error) {
	name = strings.TrimPrefix(name, "/")
	if err := bootfiles.CheckName(name); err != nil {
		return nil, nil, err
	}
	if s.cfg.Generated != nil {
		b, err := s.cfg.Generated.Generate(context.Background(), client, name)
		switch {
		case err == nil:
			return memFile(name, b)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, nil, fmt.Errorf("generate %q: %w", name, err)
		}
	}
	if s.cfg.IPXE != nil && s.cfg.IPXE.Has(name) {
		f, fi, err := s.cfg.IPXE.Open(name)
		if err != nil {
			return nil, nil, err
		}
		return f, bootProgram{fi}, nil
	}
	if first, rest, ok := strings.Cut(name, "/"); ok && s.cfg.Mounts[first] != nil {
		return s.cfg.Mounts[first].Open(rest)
	}
	if s.cfg.Root != nil {
		return s.cfg.Root.Open(name)
	}
	return nil, nil, fmt.Errorf("open %q: %w", name, fs.ErrNotExist)
}

// memFile holds b in an anonymous in-memory file, so a generated file is
// sent by the same senders (sendfile, seeks for tsize) as any other.
func memFile(name string, b []byte) (*os.File, fs.FileInfo, error) {
	fd, err := unix.MemfdCreate("tftp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("generated %q: memfd: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("generated %q: %w", name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("generated %q: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("generated %q: %w", name, err)
	}
	return f, fi, nil
}

// clientAddr is the IP address of a transfer's peer.
func clientAddr(a net.Addr) netip.Addr {
	if u, ok := a.(*net.UDPAddr); ok {
		if ip, ok := netip.AddrFromSlice(u.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// read is the library's read handler: one call per read request, in its own
// goroutine. An error returned here goes to the client in an error packet.
func (s *Server) read(name string, rf io.ReaderFrom) (err error) {
	start := time.Now()
	var client string
	var from netip.Addr
	if ot, ok := rf.(tftplib.OutgoingTransfer); ok {
		addr := ot.RemoteAddr()
		client, from = addr.String(), clientAddr(&addr)
	}
	var n int64
	result, reason := "ok", ""
	defer func() {
		// The library runs handlers on bare goroutines: a panic here would
		// take the whole metal daemon down with it.
		if p := recover(); p != nil {
			s.log.Error("tftp handler panic", "client", client, "file", name,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result, reason, err = "error", "panic", errInternal
		}
		s.logTransfer(client, name, n, time.Since(start), result, reason)
	}()

	f, _, err := s.open(from, name)
	if err != nil {
		reason = err.Error()
		result, _, err = refusal(err)
		return err
	}
	defer f.Close()
	n, err = rf.ReadFrom(newBlockReader(f))
	if err != nil {
		result, reason = "failed", err.Error()
		// The library has already sent the client its error packet.
		return nil
	}
	return nil
}

// logTransfer writes a transfer's log line and tells Observe: one for
// every read request, lockstep or windowed.
func (s *Server) logTransfer(client, name string, n int64, d time.Duration, result, reason string) {
	level := slog.LevelInfo
	if result != "ok" {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "tftp transfer",
		"client", client, "file", name, "bytes", n,
		"duration", d, "result", result, "reason", reason)
	if s.cfg.Observe != nil {
		s.cfg.Observe(result, n)
	}
}

// blockReader reads a file in large chunks: the library asks for one
// block (512 to 1468 bytes) at a time, and a read system call per block
// was a measurable part of a transfer's time. It seeks the file itself,
// because the library learns the size for tsize by seeking, before it
// reads anything.
type blockReader struct {
	f   *os.File
	buf *bufio.Reader
}

func newBlockReader(f *os.File) *blockReader {
	return &blockReader{f: f, buf: bufio.NewReaderSize(f, 64<<10)}
}

func (r *blockReader) Read(p []byte) (int, error) { return r.buf.Read(p) }

// Seek moves the file and drops what was buffered, so a read after it
// starts at the new offset.
func (r *blockReader) Seek(offset int64, whence int) (int64, error) {
	if whence == io.SeekCurrent {
		offset -= int64(r.buf.Buffered())
	}
	pos, err := r.f.Seek(offset, whence)
	r.buf.Reset(r.f)
	return pos, err
}

// write refuses every write request, with a log line saying who tried.
func (s *Server) write(name string, wt io.WriterTo) error {
	var client string
	if it, ok := wt.(tftplib.IncomingTransfer); ok {
		addr := it.RemoteAddr()
		client = addr.String()
	}
	s.log.Warn("tftp transfer", "client", client, "file", name, "bytes", 0,
		"duration", time.Duration(0), "result", "refused", "reason", "write request")
	if s.cfg.Observe != nil {
		s.cfg.Observe("refused", 0)
	}
	return errReadOnly
}

// hook logs what the handlers never see: requests the library could not
// parse or answer. Transfers themselves are logged by the read handler.
type hook struct{ log *slog.Logger }

// OnSuccess records the negotiated options, at debug level: useful when
// a ROM misbehaves with one blksize, and how the tests see what was agreed.
func (h hook) OnSuccess(st tftplib.TransferStats) {
	h.log.Debug("tftp transfer options", "sender", "pin/tftp", "client", st.RemoteAddr.String(),
		"file", st.Filename, "mode", st.Mode, "blksize", st.Opts["blksize"],
		"tsize", st.Opts["tsize"], "datagrams", st.DatagramsSent)
}

func (h hook) OnFailure(st tftplib.TransferStats, err error) {
	if st.Filename != "" {
		return // a transfer: already logged with its result
	}
	h.log.Debug("tftp bad request", "err", err)
}
