// Package metrics is metal's Prometheus registry: DHCP packets, leases in
// use, TFTP transfers and bytes, HTTP bytes, BMC call latency and errors,
// machines by lifecycle state, and apply run and step durations.
//
// The servers report through the Observe hooks in their Config (pxe/dhcp,
// pxe/tftp, pxe/http, bmc), which the daemon points at this package's
// Observe methods; what the store holds (machines, leases) is read at
// scrape time; apply durations come from watching the store's apply runs
// (Run), so the engine needs no hook of its own. Every method is safe on a
// nil *Metrics, so a daemon without metrics passes nil.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/metal-dev/metal/inventory"
)

// Options say where the scrape-time metrics come from.
type Options struct {
	// Store gives machines by state (and leases, without LeasesInUse) at
	// scrape time; nil leaves those metrics out.
	Store inventory.Store
	// LeasesInUse counts the DHCP leases held now (the daemon sums its
	// servers' dhcp.Handler.LeasesInUse); nil counts the store's
	// unexpired leases.
	LeasesInUse func() int
	// PoolAddresses counts the addresses of the DHCP pools, for an alert
	// on a pool near exhaustion; nil: not exported.
	PoolAddresses func() int
	// ScrapeTimeout bounds the store reads of one scrape; default 5 s.
	ScrapeTimeout time.Duration
	Logger        *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Metrics holds metal's collectors in its own registry (no global state).
type Metrics struct {
	reg  *prometheus.Registry
	opts Options
	log  *slog.Logger

	dhcpPackets   *prometheus.CounterVec
	tftpTransfers *prometheus.CounterVec
	tftpBytes     prometheus.Counter
	httpRequests  *prometheus.CounterVec
	httpBytes     *prometheus.CounterVec
	// httpByRoute holds each route's counters, looked up once in New: a
	// label lookup per request was a measurable share of a script
	// request's CPU. Every route and class then shows in the output from
	// the start, at 0.
	httpByRoute   map[string]*routeCounters
	bmcDuration   *prometheus.HistogramVec
	bmcErrors     *prometheus.CounterVec
	applyDuration *prometheus.HistogramVec
	stepDuration  *prometheus.HistogramVec
	applyWatch    prometheus.Gauge
}

// New builds the registry with Go runtime and process metrics beside
// metal's own.
func New(opts Options) *Metrics {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ScrapeTimeout <= 0 {
		opts.ScrapeTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Metrics{reg: prometheus.NewRegistry(), opts: opts, log: opts.Logger.With("component", "metrics")}
	m.dhcpPackets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metal_dhcp_packets_total",
		Help: "DHCP packets read, by message type and result (offer, ack, nak, ignored, error).",
	}, []string{"type", "result"})
	m.tftpTransfers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metal_tftp_transfers_total",
		Help: "TFTP requests, by result (ok, not found, refused, failed, error).",
	}, []string{"result"})
	m.tftpBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "metal_tftp_sent_bytes_total",
		Help: "Bytes of files sent over TFTP.",
	})
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metal_http_requests_total",
		Help: "HTTP requests answered, by route and status class.",
	}, []string{"route", "code"})
	m.httpBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metal_http_response_bytes_total",
		Help: "Bytes of HTTP response bodies, by route (ipxe, boot, files, images, api, console, other).",
	}, []string{"route"})
	m.httpByRoute = make(map[string]*routeCounters, len(routes))
	for _, r := range routes {
		rc := &routeCounters{bytes: m.httpBytes.WithLabelValues(r)}
		for i, class := range codeClasses {
			rc.requests[i] = m.httpRequests.WithLabelValues(r, class)
		}
		m.httpByRoute[r] = rc
	}
	m.bmcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "metal_bmc_call_duration_seconds",
		Help:    "BMC calls (retries included), by protocol and operation.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"protocol", "op"})
	m.bmcErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metal_bmc_call_errors_total",
		Help: "BMC calls that failed, by protocol and operation.",
	}, []string{"protocol", "op"})
	m.applyDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "metal_apply_duration_seconds",
		Help:    "Apply runs from start to finish, by final state.",
		Buckets: prometheus.ExponentialBuckets(10, 2, 12), // 10 s to ~6 h
	}, []string{"state"})
	m.stepDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "metal_apply_step_duration_seconds",
		Help:    "How long a machine spent in one step of an apply run, by step and how the step ended.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 s to ~2.3 h
	}, []string{"step", "state"})

	m.applyWatch = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "metal_apply_watch_up",
		Help: "1 while apply runs are being watched for their durations (Run), else 0.",
	})
	m.reg.MustRegister(m.applyWatch, m.dhcpPackets, m.tftpTransfers, m.tftpBytes, m.httpRequests, m.httpBytes,
		m.bmcDuration, m.bmcErrors, m.applyDuration, m.stepDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if opts.Store != nil || opts.LeasesInUse != nil {
		m.reg.MustRegister(&storeCollector{m: m})
	}
	return m
}

// Registry is the registry, for a caller that adds its own collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus' exposition formats.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       m.opts.ScrapeTimeout + time.Second,
	})
}

// ObserveDHCP counts one DHCP packet; it has the type of
// pxe/dhcp Config.Observe.
func (m *Metrics) ObserveDHCP(msgType, result string) {
	if m == nil {
		return
	}
	m.dhcpPackets.WithLabelValues(msgType, result).Inc()
}

// ObserveTFTP counts one TFTP request; it has the type of pxe/tftp
// Config.Observe.
func (m *Metrics) ObserveTFTP(result string, bytes int64) {
	if m == nil {
		return
	}
	m.tftpTransfers.WithLabelValues(result).Inc()
	if bytes > 0 {
		m.tftpBytes.Add(float64(bytes))
	}
}

// ObserveHTTP counts one answered HTTP request (from pxe/http
// Config.Observe's Request: the API and console are mounted on that server,
// so it sees their requests too).
func (m *Metrics) ObserveHTTP(path string, status int, bytes int64) {
	if m == nil {
		return
	}
	rc := m.httpByRoute[Route(path)]
	rc.requests[codeClassIndex(status)].Inc()
	if bytes > 0 {
		rc.bytes.Add(float64(bytes))
	}
}

// routeCounters are one route's request counters, by codeClasses, and its
// byte counter.
type routeCounters struct {
	requests [len(codeClasses)]prometheus.Counter
	bytes    prometheus.Counter
}

// routes are the values of Route: the first element of a path, or
// "other".
var routes = [...]string{"ipxe", "boot", "files", "images", "api", "console", "metrics", "other"}

// ObserveBMC times one BMC call; it has the type of bmc Config.Observe.
func (m *Metrics) ObserveBMC(op, protocol string, took time.Duration, err error) {
	if m == nil {
		return
	}
	if protocol == "" {
		protocol = "unknown"
	}
	m.bmcDuration.WithLabelValues(protocol, op).Observe(took.Seconds())
	if err != nil {
		m.bmcErrors.WithLabelValues(protocol, op).Inc()
	}
}

// Route names the part of metal's HTTP server a path belongs to; a small
// fixed set, so labels stay bounded whatever clients ask for.
func Route(path string) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	for _, r := range routes {
		if first == r {
			return r
		}
	}
	return "other"
}

// codeClasses are the values of the code label: a status's class, or
// "other" for a status outside 100..599.
var codeClasses = [...]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// codeClassIndex is the index in codeClasses of status's class.
func codeClassIndex(status int) int {
	if status < 100 || status > 599 {
		return 0
	}
	return status / 100
}

// storeCollector reads the store at scrape time: machines by state and,
// without a LeasesInUse func, the unexpired leases.
type storeCollector struct{ m *Metrics }

var (
	machinesDesc = prometheus.NewDesc("metal_machines", "Machines in the inventory, by lifecycle state.", []string{"state"}, nil)
	leasesDesc   = prometheus.NewDesc("metal_dhcp_leases_in_use", "DHCP leases held now.", nil, nil)
	upDesc       = prometheus.NewDesc("metal_inventory_up", "1 when the inventory store answered the scrape, else 0.", nil, nil)
	poolDesc     = prometheus.NewDesc("metal_dhcp_pool_addresses", "Addresses in the DHCP pools of the networks metal serves in dhcp mode.", nil, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- machinesDesc
	ch <- leasesDesc
	ch <- upDesc
	ch <- poolDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.ScrapeTimeout)
	defer cancel()
	up := 1.0
	if st := m.opts.Store; st != nil {
		ms, _, err := st.Machines(ctx)
		if err != nil {
			m.log.Warn("scrape machines", "err", err)
			up = 0
		} else {
			counts := map[inventory.State]int{}
			for _, s := range []inventory.State{inventory.StateUnknown, inventory.StateDiscovered, inventory.StateReady,
				inventory.StateProvisioning, inventory.StateProvisioned, inventory.StateFailed, inventory.StateDeprovisioning} {
				counts[s] = 0 // every state present, so a rate() never sees a series vanish
			}
			for _, mc := range ms {
				s := mc.State
				if s == "" {
					s = inventory.StateUnknown
				}
				counts[s]++
			}
			for s, n := range counts {
				ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(n), string(s))
			}
		}
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up)
	}
	if f := m.opts.PoolAddresses; f != nil {
		ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, float64(f()))
	}
	if f := m.opts.LeasesInUse; f != nil {
		ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(f()))
		return
	}
	if st := m.opts.Store; st != nil {
		leases, _, err := st.Leases(ctx)
		if err != nil {
			m.log.Warn("scrape leases", "err", err)
			return
		}
		now, n := m.opts.Now(), 0
		for _, l := range leases {
			if !l.Expired(now) {
				n++
			}
		}
		ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(n))
	}
}
