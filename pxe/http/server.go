// Package http is metal's HTTP boot server: per-machine iPXE scripts, the
// iPXE binaries for UEFI HTTP boot, and kernels, initrds and images from
// configured directories. It answers from a pxe.BootPolicy and never reads
// the site file.
//
// A machine's script, fetched at every netboot, is answered on the
// listener's connections by the package itself (scriptconn.go); a
// connection's first request of any other kind, and all after it, are
// net/http's, which answers them as it always did.
//
// Import it as pxehttp; inside, the standard library is nethttp.
package http

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metal-dev/metal/internal/httpserve"
	"github.com/metal-dev/metal/internal/latch"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/ipxe"
)

// Config is the HTTP server's configuration. Zero values are the defaults.
type Config struct {
	// Addr is the TCP listen address; default ":80".
	Addr string
	// MoreAddrs are more listen addresses, served alike: the daemon's
	// IPv6 links beside an IPv4 Addr.
	MoreAddrs []string
	// Policy answers which machine a MAC is and what it should boot.
	// Required.
	Policy pxe.BootPolicy
	// Leases, from DHCP, tells which address a MAC holds: a machine's
	// script is served to that address. Nil means only tokens authorise.
	Leases pxe.Leases
	// IPXE serves /boot/<name> for UEFI HTTP boot; nil serves none.
	IPXE *bootfiles.IPXE
	// Files and Images serve /files/... and /images/...; nil serves none.
	Files  *bootfiles.Root
	Images *bootfiles.Root
	// BaseURL resolves the kernel and initrd paths of intents in scripts
	// ("/images/x" becomes BaseURL + "/images/x"). Nil keeps paths, which
	// iPXE resolves against the URL it fetched the script from. A script
	// fetched over IPv6 while BaseURL names an IPv4 host resolves them
	// against the address it was fetched from instead: a machine of an
	// IPv6-only link has no route to BaseURL.
	BaseURL *url.URL
	// ReadHeaderTimeout (default 10 s) bounds a slow client's headers;
	// IdleTimeout (default 2 min) a kept-alive connection. There is no
	// write timeout: a multi-gigabyte image over a slow link is legitimate.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// Logger receives the access log; default slog.Default(). A served
	// script is logged at debug (a machine's fetch is in its boot
	// timeline), everything else and every refusal at info.
	Logger *slog.Logger
	// Extra mounts more handlers beside the boot routes, by ServeMux
	// pattern: the daemon's API, console and metrics share the listener.
	// Paths of one segment under ScriptPrefix are the scripts' and never
	// reach them.
	Extra map[string]nethttp.Handler
	// Agent, when set, serves the install agent's protocol under /agent/
	// (pxe/agentapi); it checks for itself which machine may speak.
	Agent nethttp.Handler
	// Observe, when set, is told of every request once it is answered:
	// the daemon turns script, kernel and initrd fetches into a machine's
	// boot timeline, and metrics count bytes. It runs on the request's
	// goroutine, so it must be quick.
	Observe func(Request)
	// Security, when set, is told of a refusal that looks like an attack
	// on a machine's credentials: a script carrying a one-time agent
	// secret asked for again after its agent started. The daemon records
	// it as a security event. It runs on the request's goroutine.
	Security func(mac net.HardwareAddr, client net.IP, what string)
}

// Request is what Observe learns about one answered request.
type Request struct {
	Method string
	Path   string
	// Client is the client's address; invalid if it sent none that
	// parses. A netip.Addr: parsing it into a net.IP was an allocation
	// on every request.
	Client netip.Addr
	// MAC is the machine the request named, when the handler parsed one
	// (a script's path): observers need not parse the path again.
	MAC      net.HardwareAddr
	Status   int
	Bytes    int64
	Duration time.Duration
}

// ScriptPrefix is where scripts live: ScriptPrefix + MAC, and
// ScriptPrefix + "boot.ipxe" for an iPXE that does not know its MAC.
const ScriptPrefix = "/ipxe/"

// Where the boot server serves Config.Files and Config.Images.
const (
	filesPrefix  = "/files/"
	imagesPrefix = "/images/"
)

// Server is metal's HTTP boot server.
type Server struct {
	cfg Config
	log *slog.Logger
	// named is cfg.Policy's one-lookup answer for scripts, when it has
	// one.
	named   pxe.NamedIntents
	handler nethttp.Handler
	scripts scriptCache
	// chainScript is the same for every iPXE, rendered once.
	chainScript script
	// dates is the Date header of scripts answered within one second,
	// formatted once a second, not per request as net/http does (nginx
	// does the same).
	dates dateCache
	// listening is closed once the listener is open (Listening).
	listening latch.Latch
	// fastFiles says the script connections may send files themselves:
	// no Extra pattern can take a file's path from the mux's own route.
	fastFiles bool
	// filesSent counts the files they sent whole.
	filesSent atomic.Int64
}

// routesNoFiles says whether an Extra pattern ("[METHOD ]path") leaves
// every path under filesPrefix and imagesPrefix to the file routes: it
// names no host (a host's pattern wins over any other) and its path is
// not under either prefix.
func routesNoFiles(pattern string) bool {
	if _, rest, ok := strings.Cut(pattern, " "); ok {
		pattern = strings.TrimLeft(rest, " \t")
	}
	if !strings.HasPrefix(pattern, "/") {
		return false
	}
	for _, p := range []string{filesPrefix, imagesPrefix} {
		if strings.HasPrefix(pattern, p) || strings.HasPrefix(p, pattern) && strings.Contains(pattern, "{") {
			return false
		}
	}
	return true
}

// New checks cfg and returns a server; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Policy == nil {
		return nil, errors.New("http: config without a boot policy")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":80"
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("server", "http"), chainScript: newScript(ipxe.Chain(ScriptPrefix))}
	s.named, _ = cfg.Policy.(pxe.NamedIntents)
	mux := nethttp.NewServeMux()
	mux.HandleFunc("GET "+ScriptPrefix+"boot.ipxe", s.chain)
	mux.HandleFunc("GET "+ScriptPrefix+"{mac}", func(w nethttp.ResponseWriter, r *nethttp.Request) {
		s.script(w, r, r.PathValue("mac"))
	})
	mux.HandleFunc("GET /boot/{name}", s.bootFile)
	mux.Handle("GET "+filesPrefix+"{path...}", s.files(cfg.Files))
	mux.Handle("GET "+imagesPrefix+"{path...}", s.files(cfg.Images))
	if cfg.Agent != nil {
		mux.Handle("/agent/", cfg.Agent)
	}
	s.fastFiles = true
	for pattern, h := range cfg.Extra {
		mux.Handle(pattern, h)
		if !routesNoFiles(pattern) {
			s.fastFiles = false
		}
	}
	s.handler = Logged(squashSlashes(s.scriptsFirst(mux)), s.log, cfg.Observe)
	return s, nil
}

// scriptsFirst answers a machine's script request itself and hands every
// other request to mux. Scripts are fetched at every netboot, far more
// often than anything else, and the mux's pattern matching (which routes
// them to the same handler) was a measurable part of their cost. Only a
// path the mux would route unchanged is taken here: one segment after
// the prefix, that is not the chain script; anything else (a dot segment,
// an escaped slash) goes to the mux, which cleans or refuses it.
func (s *Server) scriptsFirst(mux *nethttp.ServeMux) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.Method == nethttp.MethodGet || r.Method == nethttp.MethodHead {
			if mac, ok := strings.CutPrefix(r.URL.Path, ScriptPrefix); ok && mac != "" && mac != "boot.ipxe" &&
				mac != "." && mac != ".." && !strings.Contains(mac, "/") && r.URL.RawPath == "" {
				s.script(w, r, mac)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// squashSlashes serves a path with repeated slashes as if they were one,
// where ServeMux would answer with a redirect: shim asks for GRUB over HTTP
// boot as "/boot//grubx64.efi" and takes the redirect for a failure.
func squashSlashes(h nethttp.Handler) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if strings.Contains(r.URL.Path, "//") {
			p := r.URL.Path
			for strings.Contains(p, "//") {
				p = strings.ReplaceAll(p, "//", "/")
			}
			r2 := *r
			u := *r.URL
			u.Path, u.RawPath = p, ""
			r2.URL = &u
			r = &r2
		}
		h.ServeHTTP(w, r)
	})
}

// Handler is the server's handler, access log and panic recovery included.
func (s *Server) Handler() nethttp.Handler { return s.handler }

// Serve listens on cfg.Addr and cfg.MoreAddrs and serves until ctx is
// done.
func (s *Server) Serve(ctx context.Context) error {
	var lns []net.Listener
	// No TCP keepalive on the boot listener's connections (nginx's
	// so_keepalive default): an idle connection ends by IdleTimeout, and
	// one sending to a machine that went away by its retransmissions, long
	// before a keepalive probe. net sets it up with four setsockopt calls
	// per connection, a rack's worth of them in a boot storm.
	lc := net.ListenConfig{KeepAlive: -1}
	for _, addr := range append([]string{s.cfg.Addr}, s.cfg.MoreAddrs...) {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("http listen: %w", err)
		}
		lns = append(lns, ln)
	}
	return s.ServeListener(ctx, lns...)
}

// Listening is closed once Serve or ServeListener has its listeners.
func (s *Server) Listening() <-chan struct{} { return s.listening.Done() }

// ServeListener serves on lns (tests use 127.0.0.1:0) until ctx is done;
// then it lets requests in flight finish for a few seconds and closes.
// It returns the first listener's failure, once every one has stopped.
func (s *Server) ServeListener(ctx context.Context, lns ...net.Listener) error {
	s.listening.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() {
			err := s.serveOne(ctx, ln)
			cancel()
			errs <- err
		}()
	}
	var first error
	for range lns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// serveOne serves ln: script requests on connections of its own
// (scriptConns), every other request by net/http, on the connections
// they hand over.
func (s *Server) serveOne(ctx context.Context, ln net.Listener) error {
	handoff := newHandoffListener(ln.Addr())
	srv := &nethttp.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		// Boot requests are GETs without bodies: a short read timeout
		// costs nothing and bounds a client that trickles one.
		ReadTimeout:    s.cfg.ReadHeaderTimeout + 20*time.Second,
		IdleTimeout:    s.cfg.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return ctx },
		ConnContext:    connContext,
	}
	conns := newScriptConns(ctx, s, handoff)
	var stopping atomic.Bool
	stop := func() {
		stopping.Store(true)
		ln.Close()
	}
	defer context.AfterFunc(ctx, stop)()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		// The listener's failure is net/http's Serve's, as when it
		// accepted itself; closing it at the end is none.
		if err := conns.accept(ln); !stopping.Load() {
			handoff.end(err)
		}
	}()
	s.log.Info("http serving", "addr", ln.Addr().String())
	err := httpserve.Serve(ctx, srv, shutdownGrace, func() error { return srv.Serve(handoff) })
	stop()
	<-accepted
	conns.shutdown(shutdownGrace)
	if err != nil {
		return fmt.Errorf("http serve: %w", err)
	}
	return nil
}

// shutdownGrace is how long requests in flight may finish once the
// server is told to stop.
const shutdownGrace = 5 * time.Second

// chain serves the script for an iPXE that does not know its own.
func (s *Server) chain(w nethttp.ResponseWriter, r *nethttp.Request) {
	quietLog(w)
	s.writeScript(w, s.chainScript)
}

// script serves a machine's iPXE script to the address leased to its MAC,
// or to anyone presenting its token.
func (s *Server) script(w nethttp.ResponseWriter, r *nethttp.Request, macText string) {
	mac, err := net.ParseMAC(macText)
	if err != nil {
		nethttp.Error(w, "metal: not a MAC address", nethttp.StatusNotFound)
		return
	}
	setLogMAC(w, mac)
	sc, outcome, err := s.machineScript(r.Context(), mac, clientAddr(r), r.URL.RawQuery,
		func() (netip.AddrPort, bool) { return localAddr(r) })
	switch outcome {
	case scriptUnknownHost:
		nethttp.Error(w, "metal: no machine with MAC "+mac.String(), nethttp.StatusNotFound)
		return
	case scriptPolicyFailed:
		s.log.Error("boot policy", "mac", mac.String(), "err", err)
		nethttp.Error(w, "metal: boot policy failed", nethttp.StatusInternalServerError)
		return
	case scriptUnauthorised:
		nethttp.Error(w, "metal: the boot script of "+mac.String()+
			" is served only to the address leased to that MAC, or with its token",
			nethttp.StatusForbidden)
		return
	case scriptSpent:
		// The script carries the task's one-time agent secret, and the
		// agent already used it: whoever asks again (a replayed URL, a
		// host that took the machine's address) gets nothing. A machine
		// that really rebooted mid-task is given a new task by the engine.
		what := "boot script asked for again after the agent of its task started (replay refused) from " + r.RemoteAddr
		setLogAttr(w, slog.String("refused", "one-time script already used"))
		if s.cfg.Security != nil {
			s.cfg.Security(mac, clientIP(r), what)
		}
		nethttp.Error(w, "metal: the boot script of "+mac.String()+
			" carries a one-time agent credential that was already used; a new task gives a new one",
			nethttp.StatusForbidden)
		return
	case scriptRenderFailed:
		s.log.Error("render ipxe script", "mac", mac.String(), "err", err)
		nethttp.Error(w, "metal: this machine's boot intent cannot be rendered", nethttp.StatusInternalServerError)
		return
	}
	quietLog(w)
	s.writeScript(w, sc)
}

// scriptOutcome is how a request for a machine's script ends
// (machineScript): served, or why not.
type scriptOutcome int

const (
	scriptServed scriptOutcome = iota
	scriptUnknownHost
	scriptPolicyFailed
	scriptUnauthorised
	scriptSpent
	scriptRenderFailed
)

// machineScript decides a request for mac's script from remote with
// rawQuery: the policy's intent, the lease or token check, the one-time
// check, then the script. Both the script connections and net/http's
// handler decide through it, so neither serves what the other refuses.
// local is the address the request came to, asked only for an IPv6
// client (baseURL); err is the policy's or the renderer's.
func (s *Server) machineScript(ctx context.Context, mac net.HardwareAddr, remote netip.Addr, rawQuery string,
	local func() (netip.AddrPort, bool)) (script, scriptOutcome, error) {
	intent, name, err := s.intent(ctx, mac)
	switch {
	case errors.Is(err, pxe.ErrUnknownHost):
		return script{}, scriptUnknownHost, err
	case err != nil:
		return script{}, scriptPolicyFailed, err
	case !s.authorised(remote, rawQuery, mac, intent):
		return script{}, scriptUnauthorised, nil
	case intent.Spent:
		return script{}, scriptSpent, nil
	}
	sc, err := s.rendered(ctx, mac, intent, name, s.baseURL(remote, local))
	if err != nil {
		return script{}, scriptRenderFailed, err
	}
	return sc, scriptServed, nil
}

// intent is what the policy says mac should boot, and the machine's name
// when the policy answers both at once (else rendered asks for it).
func (s *Server) intent(ctx context.Context, mac net.HardwareAddr) (pxe.Intent, string, error) {
	if s.named != nil {
		return s.named.NamedIntent(ctx, mac)
	}
	intent, err := s.cfg.Policy.Intent(ctx, mac)
	return intent, "", err
}

// rendered is mac's script for intent, from the cache when it holds the
// same one. name is the machine's, from intent; a policy without
// NamedIntent is asked for it here, once the request was authorised.
func (s *Server) rendered(ctx context.Context, mac net.HardwareAddr, intent pxe.Intent, name string, base *url.URL) (script, error) {
	if s.named == nil {
		if h, err := s.cfg.Policy.Host(ctx, mac); err == nil {
			name = h.Name
		}
	}
	if sc, ok := s.scripts.get(mac, intent, name, base); ok {
		return sc, nil
	}
	body, err := ipxe.Render(intent, ipxe.Params{MAC: mac, Name: name, BaseURL: base})
	if err != nil {
		return script{}, err
	}
	return s.scripts.put(mac, intent, name, base, body), nil
}

// baseURL is what a script fetched by remote resolves paths against:
// cfg.BaseURL, or the address the request came to (local, asked only
// then) when it came over IPv6 and cfg.BaseURL is no IPv6 host.
func (s *Server) baseURL(remote netip.Addr, local func() (netip.AddrPort, bool)) *url.URL {
	base := s.cfg.BaseURL
	if base == nil || !remote.Is6() {
		// A client that is no IPv6 host (clientAddr unmaps an
		// IPv4-mapped one) came to an IPv4 address: no need to look the
		// address up, which walks the request's context on every script
		// request.
		return base
	}
	ap, ok := local()
	if !ok || !ap.Addr().Is6() || ap.Addr().Is4In6() {
		return base
	}
	if h, err := netip.ParseAddr(base.Hostname()); err == nil && h.Is6() && !h.Is4In6() {
		return base
	}
	u := *base
	u.Host = netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port()).String()
	return &u
}

// localAddr is the address r came to. It reads a TCP listener's address
// as it is, without formatting it to a string and parsing it back: that
// round trip was a fifth of a script request's own cost, on every one.
func localAddr(r *nethttp.Request) (netip.AddrPort, bool) {
	a, _ := r.Context().Value(nethttp.LocalAddrContextKey).(net.Addr)
	return addrPort(a)
}

// addrPort is a's address and port, read as they are from a TCP
// address.
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort(), true
	case net.Addr:
		ap, err := netip.ParseAddrPort(a.String())
		return ap, err == nil
	}
	return netip.AddrPort{}, false
}

// authorised says whether the client at remote, asking with rawQuery, is
// served mac's script: the address leased to mac, or mac's token.
func (s *Server) authorised(remote netip.Addr, rawQuery string, mac net.HardwareAddr, intent pxe.Intent) bool {
	if s.cfg.Leases != nil {
		if leased, ok := s.cfg.Leases.LeasedIP(mac); ok && sameIP(leased, remote) {
			return true
		}
	}
	// An empty token never matches: a machine without one is served to its
	// lease only.
	token := queryValue(rawQuery, "token")
	return intent.Token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(intent.Token)) == 1
}

// queryValue is r.URL.Query().Get(key) without building the map of every
// parameter on each script request: the first well-formed pair named key,
// unescaped; pairs holding a semicolon or a bad escape are skipped, as
// url.ParseQuery skips them. A long query goes through url.ParseQuery
// itself, which refuses too many parameters.
func queryValue(raw, key string) string {
	if len(raw) > 1024 {
		return parsedQuery(raw).Get(key)
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if k, err := url.QueryUnescape(k); err != nil || k != key {
			continue
		}
		if v, err := url.QueryUnescape(v); err == nil {
			return v
		}
	}
	return ""
}

func parsedQuery(raw string) url.Values {
	q, _ := url.ParseQuery(raw)
	return q
}

// sameIP says whether ip is remote, without the allocation of parsing
// remote into a net.IP: this runs on every script request. An invalid
// remote (an address that did not parse) matches nothing.
func sameIP(ip net.IP, remote netip.Addr) bool {
	a, ok := netip.AddrFromSlice(ip)
	return ok && remote.IsValid() && a.Unmap() == remote.Unmap()
}

// clientAddr is the client's address without its port, or the zero Addr.
func clientAddr(r *nethttp.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func clientIP(r *nethttp.Request) net.IP {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
}

// Header values every script answer carries, built once: net/http only
// reads them. A script is an answer for now, not a document: the next boot
// may be meant to do something else, hence no-store.
var (
	scriptType    = []string{"text/plain; charset=utf-8"}
	scriptNoStore = []string{"no-store"}
)

// dateCache holds the Date header value of the latest second asked for.
type dateCache struct{ p atomic.Pointer[dateValue] }

type dateValue struct {
	sec int64
	v   []string
}

// at is the Date header value of now.
func (c *dateCache) at(now time.Time) []string {
	sec := now.Unix()
	if d := c.p.Load(); d != nil && d.sec == sec {
		return d.v
	}
	d := &dateValue{sec: sec, v: []string{now.UTC().Format(nethttp.TimeFormat)}}
	c.p.Store(d)
	return d.v
}

func (s *Server) writeScript(w nethttp.ResponseWriter, sc script) {
	h := w.Header()
	h["Content-Type"] = scriptType
	h["Cache-Control"] = scriptNoStore
	if sw, ok := w.(*statusWriter); ok {
		h["Date"] = s.dates.at(sw.start)
	}
	if sc.length != nil {
		h["Content-Length"] = sc.length
	}
	w.Write(sc.body)
}

func (s *Server) bootFile(w nethttp.ResponseWriter, r *nethttp.Request) {
	if s.cfg.IPXE == nil {
		nethttp.NotFound(w, r)
		return
	}
	f, fi, err := s.cfg.IPXE.Open(r.PathValue("name"))
	if err != nil {
		nethttp.NotFound(w, r)
		return
	}
	defer f.Close()
	serveFile(w, r, f, fi)
}

// files serves a directory confined by bootfiles.Root.
func (s *Server) files(root *bootfiles.Root) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if root == nil {
			nethttp.NotFound(w, r)
			return
		}
		name := r.PathValue("path")
		f, fi, err := root.Open(name)
		switch {
		case errors.Is(err, bootfiles.ErrBadName):
			setLogAttr(w, slog.String("refused", err.Error()))
			nethttp.Error(w, "metal: file name refused", nethttp.StatusForbidden)
			return
		case errors.Is(err, fs.ErrNotExist):
			nethttp.NotFound(w, r)
			return
		case err != nil:
			s.log.Error("open file", "path", name, "err", err)
			nethttp.Error(w, "metal: cannot open file", nethttp.StatusInternalServerError)
			return
		}
		defer f.Close()
		serveFile(w, r, f, fi)
	})
}

// serveFile leaves Range, If-Modified-Since and If-None-Match to
// http.ServeContent; the ETag (size and modification time) lets a client
// resume an image download only if the file did not change meanwhile.
// The body goes out corked (cork.go).
func serveFile(w nethttp.ResponseWriter, r *nethttp.Request, f *os.File, fi fs.FileInfo) {
	w.Header().Set("ETag", string(appendETag(nil, fi)))
	w.Header().Set("Content-Type", "application/octet-stream")
	defer cork(r)()
	nethttp.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
}

// appendETag appends a file's ETag: its size and modification time, in
// hex and quoted.
func appendETag(out []byte, fi fs.FileInfo) []byte {
	out = append(out, '"')
	out = strconv.AppendInt(out, fi.Size(), 16)
	out = append(out, '-')
	out = strconv.AppendInt(out, fi.ModTime().UnixNano(), 16)
	return append(out, '"')
}

// setLogMAC adds the machine's MAC to the request's access log line,
// formatted only if the line is written.
func setLogMAC(w nethttp.ResponseWriter, mac net.HardwareAddr) {
	if sw, ok := w.(*statusWriter); ok {
		sw.mac = mac
	}
}

// quietLog writes the request's access log line at debug level if it
// succeeds. Scripts are small and fetched at every netboot: at info, the
// line cost more of the server's CPU than rendering the script (its
// formatting and a write to stderr per request), and each machine's
// script fetch is already in its boot timeline. Failures stay at info.
func quietLog(w nethttp.ResponseWriter) {
	if sw, ok := w.(*statusWriter); ok {
		sw.quiet = true
	}
}

// setLogAttr adds a to the request's access log line. It rides on the
// response writer the access log wrapped, not on the request's context:
// a new context would copy the whole request, on every request.
func setLogAttr(w nethttp.ResponseWriter, a slog.Attr) {
	if sw, ok := w.(*statusWriter); ok {
		sw.attrs = append(sw.attrs, a)
	}
}

// Logged wraps h with the access log (to log) and recovers a panicking
// handler, so one bad request costs a 500, not the daemon; observe, when
// set, is told of every answered request. The boot server wraps its routes
// with it; the daemon wraps its API listener's, when that is apart.
func Logged(h nethttp.Handler, log *slog.Logger, observe func(Request)) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		start := time.Now()
		sw := statusWriters.Get().(*statusWriter)
		sw.ResponseWriter = w
		sw.start = start
		defer func() {
			if p := recover(); p != nil {
				if p == nethttp.ErrAbortHandler {
					panic(p) // sw is not reused: whatever holds it may still run
				}
				log.Error("http handler panic", "method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if sw.status == 0 {
					nethttp.Error(sw, "metal: internal error", nethttp.StatusInternalServerError)
				}
			}
			level := slog.LevelInfo
			if sw.quiet && sw.code() < 400 {
				level = slog.LevelDebug
			}
			answered(r.Context(), log, level, observe, Request{Method: r.Method, Path: r.URL.Path, Client: clientAddr(r),
				MAC: sw.mac, Status: sw.code(), Bytes: sw.bytes, Duration: time.Since(start)},
				func() string { return r.RemoteAddr }, sw.attrs)
			sw.reset()
			statusWriters.Put(sw)
		}()
		h.ServeHTTP(sw, r)
	})
}

// answered writes the access log line of a request (at level, with more
// attributes than req's) and tells observe of it. client is the client's
// address as net/http writes it, asked only if the line is written.
func answered(ctx context.Context, log *slog.Logger, level slog.Level, observe func(Request), req Request,
	client func() string, more []slog.Attr) {
	if log.Enabled(ctx, level) {
		// The query is left out: it may hold a machine's token.
		attrs := append(make([]slog.Attr, 0, 7+len(more)),
			slog.String("method", req.Method), slog.String("path", req.Path),
			slog.String("client", client()), slog.Int("status", req.Status),
			slog.Int64("bytes", req.Bytes), slog.Duration("duration", req.Duration))
		if req.MAC != nil {
			attrs = append(attrs, slog.String("mac", req.MAC.String()))
		}
		log.LogAttrs(ctx, level, "http request", append(attrs, more...)...)
	}
	if observe != nil {
		observe(req)
	}
}

// statusWriters are reused from request to request: one fewer allocation
// on every request. net/http forbids using a ResponseWriter once its
// handler returned, so nothing holds one when it goes back.
var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

// reset readies w for the next request, keeping its attrs' array.
func (w *statusWriter) reset() {
	clear(w.attrs)
	*w = statusWriter{attrs: w.attrs[:0]}
}

// statusWriter records the status and body size for the access log, and
// the attributes handlers add to its line.
type statusWriter struct {
	nethttp.ResponseWriter
	status int
	bytes  int64
	attrs  []slog.Attr
	mac    net.HardwareAddr // setLogMAC
	quiet  bool             // quietLog
	start  time.Time        // when the request came
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = nethttp.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the server's sendfile path for large files, which an
// io.Copy through Write alone would lose.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = nethttp.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() nethttp.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return nethttp.StatusOK
	}
	return w.status
}
