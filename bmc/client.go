package bmc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/go-logr/logr"
)

// bmclib provider names, used with its For filter.
const (
	providerRedfish = "gofish"
	providerIPMI    = "ipmitool"
)

// endpoint is where one protocol reaches the BMC.
type endpoint struct {
	scheme string // http or https; Redfish only
	host   string // without brackets
	port   string
}

func (e endpoint) hostPort() string { return net.JoinHostPort(e.host, e.port) }

// Client is a Driver for one BMC, backed by bmclib. It is safe for
// concurrent use.
type Client struct {
	cfg     Config
	log     *slog.Logger
	redact  redactor
	http    *http.Client
	redfish endpoint
	ipmi    endpoint

	mu       sync.Mutex
	provider string // the bmclib provider that answered last
	resolved string // protocol chosen by "auto", once one has answered
	auth     string // Redfish authentication in use, once decided
	authWhy  string // why, when it was not the configured or usual one
}

var _ MediaDriver = (*Client)(nil)

// New checks cfg and returns a Client for it. Nothing is sent to the BMC
// until the first call. log may be nil.
func New(cfg Config, log *slog.Logger) (*Client, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secrets := []string{cfg.Password.reveal()}
	user := cfg.Username
	if cfg.UsernameSecret {
		secrets, user = append(secrets, cfg.Username), ""
	}
	c := &Client{cfg: cfg, redact: newRedactor(user, secrets...)}
	c.log = slog.New(redactHandler{next: log.Handler(), r: c.redact}).With("machine", cfg.Machine, "bmc", cfg.Address)

	switch cfg.Protocol {
	case ProtocolRedfish, ProtocolIPMI, ProtocolAuto:
	default:
		return nil, c.fail("configure", nil, fmt.Errorf("unknown protocol %q", cfg.Protocol), "use redfish, ipmi or auto")
	}
	switch cfg.RedfishAuth {
	case AuthAuto:
	case AuthSession, AuthBasic:
		c.auth = cfg.RedfishAuth
	default:
		return nil, c.fail("configure", nil, fmt.Errorf("unknown Redfish authentication %q", cfg.RedfishAuth), "use session, basic or auto")
	}
	if cfg.Address == "" {
		return nil, c.fail("configure", nil, errors.New("no BMC address"), "set the bmc address")
	}
	var err error
	if c.redfish, c.ipmi, err = parseAddress(cfg.Address); err != nil {
		return nil, c.fail("configure", nil, err, "the address is host, host:port or http(s)://host[:port]")
	}
	if cfg.Protocol == ProtocolIPMI {
		c.resolved = ProtocolIPMI
	}
	if cfg.Protocol == ProtocolRedfish {
		c.resolved = ProtocolRedfish
	}

	tlsCfg := &tls.Config{InsecureSkipVerify: cfg.InsecureTLS, MinVersion: tls.VersionTLS12} //nolint:gosec // explicit opt-in
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, c.fail("configure", nil, fmt.Errorf("read ca_file: %w", err), "check ca_file")
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, c.fail("configure", nil, fmt.Errorf("ca_file %s holds no PEM certificate", cfg.CAFile), "check ca_file")
		}
		tlsCfg.RootCAs = pool
	}
	c.http = &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			TLSClientConfig:       tlsCfg,
			DialContext:           (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
			TLSHandshakeTimeout:   cfg.Timeout,
			ResponseHeaderTimeout: cfg.Timeout,
			// BMCs are small and often mishandle idle keep-alive
			// connections; one request, one connection.
			DisableKeepAlives: true,
		},
	}
	return c, nil
}

// parseAddress splits a configured address into the Redfish and IPMI
// endpoints. An explicit port applies to both protocols (for "auto").
func parseAddress(addr string) (rf, ipmi endpoint, err error) {
	scheme := "https"
	rest := addr
	if i := strings.Index(addr, "://"); i >= 0 {
		u, err := url.Parse(addr)
		if err != nil {
			return rf, ipmi, fmt.Errorf("parse address: %w", err)
		}
		if u.User != nil {
			return rf, ipmi, errors.New("the address must not carry credentials; use username and password")
		}
		switch u.Scheme {
		case "http", "https":
			scheme = u.Scheme
		case "ipmi", "redfish":
		default:
			return rf, ipmi, fmt.Errorf("unknown scheme %q", u.Scheme)
		}
		if u.Path != "" && u.Path != "/" && u.Path != "/redfish/v1" && u.Path != "/redfish/v1/" {
			return rf, ipmi, fmt.Errorf("unexpected path %q", u.Path)
		}
		rest = u.Host
	}
	host, port := rest, ""
	if h, p, err := net.SplitHostPort(rest); err == nil {
		host, port = h, p
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return rf, ipmi, fmt.Errorf("bad port %q", p)
		}
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return rf, ipmi, errors.New("no host")
	}
	rf = endpoint{scheme: scheme, host: host, port: port}
	if rf.port == "" {
		rf.port = "443"
		if scheme == "http" {
			rf.port = "80"
		}
	}
	ipmi = endpoint{host: host, port: port}
	if ipmi.port == "" {
		ipmi.port = "623"
	}
	return rf, ipmi, nil
}

// Machine is the machine name from the Config.
func (c *Client) Machine() string { return c.cfg.Machine }

// Address is the BMC address from the Config.
func (c *Client) Address() string { return c.cfg.Address }

// Provider is the bmclib provider that answered the last successful call
// ("gofish" for Redfish, "ipmitool" for IPMI), or "" before any.
func (c *Client) Provider() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.provider
}

// Protocol is the protocol in use: the configured one, or for "auto" the
// one that answered ("" until one has).
func (c *Client) Protocol() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resolved
}

// Auth is the Redfish authentication in use: AuthSession or AuthBasic;
// "" before the first Redfish call has decided it, or over IPMI.
func (c *Client) Auth() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resolved == ProtocolIPMI {
		return ""
	}
	return c.auth
}

// AuthReason says why Auth is what it is when metal chose it ("the
// service has no SessionService"), or "" when it was configured or is the
// usual session.
func (c *Client) AuthReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resolved == ProtocolIPMI {
		return ""
	}
	return c.authWhy
}

func (c *Client) setAuth(auth, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.auth != auth {
		c.log.Debug("bmc redfish authentication chosen", "auth", auth, "reason", why)
	}
	c.auth, c.authWhy = auth, why
}

func (c *Client) setProvider(protocol, provider string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resolved = protocol
	if provider != "" {
		c.provider = provider
	}
}

// fail builds the *Error for op from f (or a plain cause and hint).
func (c *Client) fail(op string, kind error, cause error, hint string) *Error {
	return &Error{Machine: c.cfg.Machine, Address: c.cfg.Address, Op: op, Kind: kind, Hint: hint, Err: c.redact.wrap(cause)}
}

// newBMCLib returns a bmclib client limited to the provider for protocol.
func (c *Client) newBMCLib(protocol string, basicAuth bool) *bmclib.Client {
	opts := []bmclib.Option{
		bmclib.WithLogger(logr.FromSlogHandler(c.log.Handler())),
		bmclib.WithHTTPClient(c.http),
		bmclib.WithPerProviderTimeout(c.cfg.Timeout),
		bmclib.WithIpmitoolCipherSuite(c.cfg.IPMICipherSuite),
		bmclib.WithIpmitoolPort(c.ipmi.port),
		bmclib.WithRedfishPort(c.redfish.port),
		bmclib.WithRedfishSystemName(c.cfg.System),
		// metal's virtual BMC and many real ones send no ETags; bmclib
		// would otherwise send an empty If-Match on some PATCHes.
		bmclib.WithRedfishEtagMatchDisabled(true),
		bmclib.WithRedfishUseBasicAuth(basicAuth),
	}
	if c.cfg.IPMIToolPath != "" {
		opts = append(opts, bmclib.WithIpmitoolPath(c.cfg.IPMIToolPath))
	}
	host := c.ipmi.host
	if protocol == ProtocolRedfish {
		host = c.redfish.scheme + "://" + bracket(c.redfish.host)
	}
	bc := bmclib.NewClient(host, c.cfg.Username, c.cfg.Password.reveal(), opts...)
	provider := providerIPMI
	if protocol == ProtocolRedfish {
		provider = providerRedfish
	}
	// A permanent filter: bmclib's For() only applies to the next call.
	bc.Registry.Drivers = bc.Registry.For(provider)
	return bc
}

func bracket(host string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

func (c *Client) displayAddr(protocol string) string {
	if protocol == ProtocolIPMI {
		return c.ipmi.hostPort()
	}
	return c.redfish.scheme + "://" + c.redfish.hostPort()
}

// opFunc is one operation against an opened bmclib client.
type opFunc func(ctx context.Context, bc *bmclib.Client, protocol string) error

// call runs fn with a fresh connection, a timeout per attempt and retries
// of transient failures. safeToRetry says whether fn may be repeated after
// a failure that happened after the request may have reached the BMC.
func (c *Client) call(ctx context.Context, op string, safeToRetry bool, fn opFunc) (err error) {
	if c.cfg.Observe != nil {
		start := time.Now()
		defer func() {
			protocol := c.Protocol()
			if protocol == "" {
				protocol = c.cfg.Protocol // "auto" that reached neither
			}
			c.cfg.Observe(op, protocol, time.Since(start), err)
		}()
	}
	protocol, err := c.resolve(ctx, op)
	if err != nil {
		return err
	}
	var last failure
	backoff := 250 * time.Millisecond
	for attempt := 1; attempt <= c.cfg.Retries; attempt++ {
		start := time.Now()
		provider, err := c.attempt(ctx, protocol, fn)
		if err == nil {
			c.setProvider(protocol, provider)
			return nil
		}
		if ctx.Err() != nil {
			return c.fail(op, ErrTimeout, ctx.Err(), fmt.Sprintf("the operation was cancelled or ran out of time; is the BMC reachable at %s?", c.displayAddr(protocol)))
		}
		last = classify(err, time.Since(start), protocol, c.displayAddr(protocol))
		if !last.retry || attempt == c.cfg.Retries {
			break
		}
		// Only failures before the request left (nothing listening) are
		// safe to repeat for non-idempotent actions.
		if !safeToRetry && last.kind != ErrUnreachable {
			break
		}
		c.log.Debug("bmc call failed, retrying", "op", op, "attempt", attempt, "err", c.redact.scrub(last.cause.Error()))
		select {
		case <-ctx.Done():
			return c.fail(op, ErrTimeout, ctx.Err(), "the operation was cancelled")
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	return c.fail(op, last.kind, last.cause, last.hint)
}

// attempt opens a connection, runs fn and closes, all within Timeout. The
// work runs in its own goroutine because bmclib's Redfish provider does not
// pass the context to its HTTP requests; the HTTP client's own timeout ends
// that goroutine soon after we stop waiting for it.
func (c *Client) attempt(ctx context.Context, protocol string, fn opFunc) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	type result struct {
		provider string
		err      error
	}
	done := make(chan result, 1)
	go func() {
		bc, err := c.open(ctx, protocol)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer func() {
			closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
			defer cancel()
			_ = bc.Close(closeCtx)
		}()
		err = fn(ctx, bc, protocol)
		done <- result{provider: bc.GetMetadata().SuccessfulProvider, err: err}
	}()
	select {
	case r := <-done:
		if r.provider == "" && r.err == nil {
			r.provider = map[string]string{ProtocolRedfish: providerRedfish, ProtocolIPMI: providerIPMI}[protocol]
		}
		return r.provider, r.err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "", errAttemptTimeout
		}
		return "", ctx.Err()
	}
}

// resolve picks the protocol: the configured one, or for "auto" the first
// of Redfish and IPMI that accepts a connection.
func (c *Client) resolve(ctx context.Context, op string) (string, error) {
	c.mu.Lock()
	p := c.resolved
	c.mu.Unlock()
	if p != "" {
		return p, nil
	}
	var fails []failure
	for _, protocol := range []string{ProtocolRedfish, ProtocolIPMI} {
		start := time.Now()
		provider, err := c.attempt(ctx, protocol, func(context.Context, *bmclib.Client, string) error { return nil })
		if err == nil {
			c.log.Debug("bmc protocol chosen", "protocol", protocol)
			c.setProvider(protocol, provider)
			return protocol, nil
		}
		if ctx.Err() != nil {
			return "", c.fail(op, ErrTimeout, ctx.Err(), "the operation was cancelled")
		}
		fails = append(fails, classify(err, time.Since(start), protocol, c.displayAddr(protocol)))
	}
	rf, ipmi := fails[0], fails[1]
	kind := rf.kind
	if kind == nil || (ipmi.kind == ErrCredentials) {
		kind = ipmi.kind
	}
	return "", c.fail(op, kind,
		fmt.Errorf("neither Redfish (%s: %v) nor IPMI (%s: %v) answered", c.displayAddr(ProtocolRedfish), rf.cause, c.displayAddr(ProtocolIPMI), ipmi.cause),
		"is the BMC reachable, and is protocol right for it? check the BMC username and password")
}

// PowerState reports the machine's power state.
func (c *Client) PowerState(ctx context.Context) (Power, error) {
	var p Power
	err := c.call(ctx, "power status", true, func(ctx context.Context, bc *bmclib.Client, _ string) error {
		s, err := bc.GetPowerState(ctx)
		if err != nil {
			return err
		}
		p = parsePower(s)
		return nil
	})
	return p, err
}

// parsePower maps Redfish ("On", "PoweringOff") and ipmitool ("Chassis
// Power is on") answers to metal's states. Transitional states are
// unknown: the poller waits them out.
func parsePower(s string) Power {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "on" || strings.HasSuffix(s, " on"):
		return PowerOn
	case s == "off" || strings.HasSuffix(s, " off"):
		return PowerOff
	}
	return PowerUnknown
}

// Power performs action and waits, up to PowerWait, for the state it
// implies.
func (c *Client) Power(ctx context.Context, action PowerAction) error {
	op := "power " + string(action)
	want, err := action.target()
	if err != nil {
		return c.fail(op, nil, err, "")
	}
	state := string(action)
	if action == ActionCycle || action == ActionReset {
		// Cycling a machine that is off fails on many BMCs (and in bmclib's
		// Redfish provider); the operator's intent is "make it boot anew".
		cur, err := c.PowerState(ctx)
		if err != nil {
			return err
		}
		if cur == PowerOff {
			state = "on"
		}
	}
	idempotent := action == ActionOn || action == ActionOff || action == ActionSoft
	err = c.call(ctx, op, idempotent, func(ctx context.Context, bc *bmclib.Client, _ string) error {
		ok, err := bc.SetPowerState(ctx, state)
		if err != nil {
			md := bc.GetMetadata()
			// bmclib's Redfish provider sends GracefulShutdown and then
			// returns ok=false with no error; setPowerState turns that into
			// an error without recording a provider failure. The poll
			// below decides whether the shutdown happened.
			if state == "soft" && len(md.ProvidersAttempted) > 0 && len(md.FailedProviderDetail) == 0 {
				return nil
			}
			return err
		}
		if !ok {
			return errors.New("the BMC did not accept the request")
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.waitPower(ctx, op, want)
}

// waitPower polls until the machine is in state want or PowerWait passes.
func (c *Client) waitPower(ctx context.Context, op string, want Power) error {
	deadline := time.Now().Add(c.cfg.PowerWait)
	interval := 250 * time.Millisecond
	last := PowerUnknown
	for {
		p, err := c.PowerState(ctx)
		if err == nil {
			last = p
			if p == want {
				c.log.Info("bmc power state reached", "op", op, "power", string(p), "provider", c.Provider())
				return nil
			}
		} else if ctx.Err() != nil {
			return err
		}
		if time.Now().Add(interval).After(deadline) {
			return c.fail(op, ErrPowerNotReached,
				fmt.Errorf("BMC reported success but power is still %s after %s", last, c.cfg.PowerWait),
				"the BMC may be lying or the machine stuck; check the machine's console and the BMC's event log")
		}
		select {
		case <-ctx.Done():
			return c.fail(op, ErrTimeout, ctx.Err(), "the operation was cancelled while waiting for the power state")
		case <-time.After(interval):
		}
		if interval < 2*time.Second {
			interval *= 2
		}
	}
}

// SetBootDevice chooses the next boot device.
func (c *Client) SetBootDevice(ctx context.Context, dev BootDevice, opts BootOptions) error {
	op := "boot device " + string(dev)
	if !dev.valid() {
		return c.fail(op, nil, fmt.Errorf("unknown boot device %q", string(dev)), "use pxe, disk, cdrom or bios")
	}
	return c.call(ctx, op, true, func(ctx context.Context, bc *bmclib.Client, _ string) error {
		ok, err := bc.SetBootDevice(ctx, string(dev), opts.Persistent, opts.UEFI)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("the BMC did not accept the boot device")
		}
		return nil
	})
}

// InsertMedia attaches the image at url as virtual media (Redfish only).
func (c *Client) InsertMedia(ctx context.Context, kind MediaKind, url string) error {
	if kind == "" {
		kind = MediaCD
	}
	if url == "" {
		return c.fail("insert media", nil, errors.New("no image URL"), "")
	}
	return c.setMedia(ctx, "insert media", kind, url)
}

// EjectMedia detaches virtual media (Redfish only).
func (c *Client) EjectMedia(ctx context.Context) error {
	return c.setMedia(ctx, "eject media", MediaCD, "")
}

func (c *Client) setMedia(ctx context.Context, op string, kind MediaKind, url string) error {
	if p := c.Protocol(); p == ProtocolIPMI {
		return c.fail(op, ErrUnsupported, errors.New("virtual media needs Redfish"), "set the machine's bmc protocol to redfish")
	}
	return c.call(ctx, op, true, func(ctx context.Context, bc *bmclib.Client, protocol string) error {
		if protocol != ProtocolRedfish {
			return errors.New("virtual media needs Redfish; this BMC answered only IPMI")
		}
		ok, err := bc.SetVirtualMedia(ctx, string(kind), url)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("the BMC did not accept the virtual media request")
		}
		return nil
	})
}
