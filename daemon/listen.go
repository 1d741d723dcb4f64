package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/metal-dev/metal/daemon/console"
	"github.com/metal-dev/metal/internal/httpserve"
	"github.com/metal-dev/metal/internal/latch"
	pxehttp "github.com/metal-dev/metal/pxe/http"
)

// APIListen says where the console, the JSON API and the metrics listen:
// on a listener of their own, on a management interface or loopback (metal
// serve's default is DefaultAPIListen), optionally with TLS. They are kept
// off the netboot listener because the boot network is where untrusted
// machines live: a bearer token or a console cookie sent there in clear
// is anyone's (SECURITY.md). Machines' boot traffic stays plain HTTP on
// the netboot listener whatever this says (iPXE and firmware cannot be
// given a private certificate authority).
type APIListen struct {
	// Addr is the listen address ("127.0.0.1:9090", "10.0.9.2:443").
	// Empty and not Shared: no TCP listener serves them; local commands
	// still read the state through the state directory's socket.
	Addr string
	// Shared serves them on the netboot listener as well, as metal did
	// before it had a management listener (metal serve
	// --api-on-boot-network). The daemon warns at start: tokens and
	// cookies then cross the boot network.
	Shared bool
	// TLSCert and TLSKey are PEM files of the certificate (its chain
	// after it) and its key; both or neither, and only with Addr.
	TLSCert, TLSKey string
}

// DefaultAPIListen is where metal serve puts the console, API and metrics
// unless told otherwise: loopback, reached on the server itself or through
// an SSH tunnel.
const DefaultAPIListen = "127.0.0.1:9090"

// TLS says whether the listener speaks HTTPS.
func (a APIListen) TLS() bool { return a.TLSCert != "" }

// apiServer is the console's, API's and metrics' own listener.
type apiServer struct {
	cfg     APIListen
	handler http.Handler
	tls     *tls.Config
	log     *slog.Logger
	// listening is closed once the listener is open.
	listening latch.Latch
}

// newAPIServer checks cfg and, when it names an address, returns the
// server for handlers (by ServeMux pattern); nil when they stay on the
// netboot listener. The certificate is read here, so a wrong path or a
// key that does not match stops metal serve before anything listens.
func newAPIServer(cfg APIListen, handlers map[string]http.Handler, log *slog.Logger, observe func(pxehttp.Request)) (*apiServer, error) {
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("TLS needs both a certificate and its key (--tls-cert FILE --tls-key FILE)")
	}
	if cfg.Shared && cfg.Addr != "" {
		return nil, fmt.Errorf("the console and API either share the netboot listener (--api-on-boot-network) "+
			"or have their own (--api-listen %s), not both", cfg.Addr)
	}
	if cfg.Addr == "" {
		if cfg.TLSCert != "" {
			return nil, errors.New("TLS is for the console and API listener only, and they have none " +
				"(the netboot listener's boot traffic must stay plain HTTP): give them their own with --api-listen ADDR")
		}
		return nil, nil
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("api listen address %q: %w (write HOST:PORT, like 127.0.0.1:9090)", cfg.Addr, err)
	}
	log = log.With("server", "api-listener")
	s := &apiServer{cfg: cfg, log: log}
	if cfg.TLS() {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("api TLS certificate %s and key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	mux := http.NewServeMux()
	for pattern, h := range handlers {
		mux.Handle(pattern, h)
	}
	// Only the console, API and metrics live here: the root leads to the
	// console, anything else is not found.
	mux.Handle("GET /{$}", http.RedirectHandler(console.Prefix, http.StatusSeeOther))
	s.handler = pxehttp.Logged(mux, log, observe)
	return s, nil
}

// URL is where operators reach the console and API.
func (s *apiServer) URL(addr string) string {
	scheme := "http"
	if s.cfg.TLS() {
		scheme = "https"
	}
	return scheme + "://" + addr
}

// Serve listens and serves until ctx ends; requests in flight (event
// streams among them) get a few seconds to finish.
func (s *apiServer) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("api listen: %w (is another program on %s? choose another --api-listen)", err, s.cfg.Addr)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		TLSConfig:         s.tls,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.log.Info("console and API serving", "url", s.URL(ln.Addr().String()))
	s.listening.Close()
	err = httpserve.Serve(ctx, srv, 5*time.Second, func() error {
		if s.tls != nil {
			return srv.ServeTLS(ln, "", "")
		}
		return srv.Serve(ln)
	})
	if err != nil {
		return fmt.Errorf("api serve: %w", err)
	}
	return nil
}
