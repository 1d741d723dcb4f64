package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/daemon/api/apitest"
	"github.com/metal-dev/metal/daemon/metrics"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/dhcp"
	pxehttp "github.com/metal-dev/metal/pxe/http"
	"github.com/metal-dev/metal/pxe/pxetest"
	"github.com/metal-dev/metal/pxe/storepolicy"
	"github.com/metal-dev/metal/pxe/tftp"
)

// scrape fetches /metrics over HTTP and parses it with Prometheus' own
// text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return fams
}

// value returns the value of the series of family name with labels
// (counter, gauge, or a histogram's count), and whether it exists.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

type want struct {
	name   string
	labels map[string]string
	value  float64
}

// eventually scrapes until every want holds (or 10 s pass), then checks.
func eventually(t *testing.T, url string, wants []want) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams := scrape(t, url)
		ok := true
		for _, w := range wants {
			if got, found := value(fams, w.name, w.labels); !found || got != w.value {
				ok = false
			}
		}
		if ok || time.Now().After(deadline) {
			check(t, fams, wants)
			return fams
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func check(t *testing.T, fams map[string]*dto.MetricFamily, wants []want) {
	t.Helper()
	for _, w := range wants {
		got, ok := value(fams, w.name, w.labels)
		if !ok {
			t.Errorf("%s%v: missing", w.name, w.labels)
			continue
		}
		if got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
}

// TestServersFeedMetrics runs the real TFTP and HTTP boot servers on
// loopback and a real Redfish BMC client against metal's virtual BMC,
// each with its Observe hook on the metrics, fetches with real clients,
// and reads the counts back from a scrape.
func TestServersFeedMetrics(t *testing.T) {
	t.Parallel()
	lab := apitest.New(t, "../api/testdata/site.hcl")
	lab.Seed(t)
	m := metrics.New(metrics.Options{Store: lab.Store})
	scrapeSrv := httptest.NewServer(m.Handler())
	t.Cleanup(scrapeSrv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	dir := t.TempDir()
	kernel := make([]byte, 300_000)
	for i := range kernel {
		kernel[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := bootfiles.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })

	// TFTP: curl fetches a file and asks for one that is not there.
	curl := pxetest.RequireTool(t, "curl", "curl")
	ts, err := tftp.New(tftp.Config{Root: root, Observe: m.ObserveTFTP, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ts.ServeConn(ctx, conn)
	tftpURL := "tftp://" + conn.LocalAddr().String() + "/"
	out := filepath.Join(t.TempDir(), "got")
	if b, err := exec.Command(curl, "-sS", "--tftp-blksize", "1468", "-o", out, tftpURL+"vmlinuz").CombinedOutput(); err != nil {
		t.Fatalf("curl tftp: %v\n%s", err, b)
	}
	if b, err := exec.Command(curl, "-sS", "-o", out, tftpURL+"missing").CombinedOutput(); err == nil {
		t.Fatalf("curl tftp of a missing file succeeded: %s", b)
	}

	// HTTP: the boot server's /files/ route, fetched twice.
	policy, err := storepolicy.New(ctx, lab.Store, storepolicy.Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := pxehttp.New(pxehttp.Config{Policy: policy, Files: root, Logger: discard(),
		Observe: func(r pxehttp.Request) { m.ObserveHTTP(r.Path, r.Status, r.Bytes) }})
	if err != nil {
		t.Fatal(err)
	}
	bootSrv := httptest.NewServer(hs.Handler())
	t.Cleanup(bootSrv.Close)
	for _, p := range []string{"/files/vmlinuz", "/files/vmlinuz", "/files/nothing"} {
		resp, err := http.Get(bootSrv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	// BMC: bmclib's Redfish provider against metal's virtual BMC (a
	// machine with no QEMU behind it reads as off), then an address
	// where nothing listens.
	vm, err := virtual.NewQEMU(virtual.QEMUConfig{Name: "vm-01", QMPSocket: filepath.Join(t.TempDir(), "none.qmp")})
	if err != nil {
		t.Fatal(err)
	}
	vbmc, err := virtual.NewServer(virtual.Options{Username: "admin", Password: "pw"}, virtual.MachineSpec{Name: "vm-01", Machine: vm})
	if err != nil {
		t.Fatal(err)
	}
	vbmcSrv := httptest.NewServer(vbmc)
	t.Cleanup(vbmcSrv.Close)
	good, err := bmc.New(bmc.Config{Machine: "vm-01", Protocol: bmc.ProtocolRedfish, Address: vbmcSrv.URL, System: "vm-01",
		Username: "admin", Password: "pw", Timeout: 10 * time.Second, Observe: m.ObserveBMC}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := good.PowerState(ctx); err != nil || p != bmc.PowerOff {
		t.Fatalf("power state = %q, %v", p, err)
	}
	closed := closedPort(t)
	bad, err := bmc.New(bmc.Config{Machine: "gone", Protocol: bmc.ProtocolRedfish, Address: "http://" + closed,
		Username: "admin", Password: "pw", Timeout: 2 * time.Second, Retries: 1, Observe: m.ObserveBMC}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.PowerState(ctx); err == nil {
		t.Fatal("power state of a BMC where nothing listens succeeded")
	}

	// The servers count a request once they are done with it, which may
	// be a moment after the client has all it wanted.
	fams := eventually(t, scrapeSrv.URL, []want{
		{"metal_tftp_transfers_total", map[string]string{"result": "ok"}, 1},
		{"metal_tftp_transfers_total", map[string]string{"result": "not found"}, 1},
		{"metal_tftp_sent_bytes_total", nil, float64(len(kernel))},
		{"metal_http_requests_total", map[string]string{"route": "files", "code": "2xx"}, 2},
		{"metal_http_requests_total", map[string]string{"route": "files", "code": "4xx"}, 1},
		{"metal_bmc_call_duration_seconds", map[string]string{"protocol": "redfish", "op": "power status"}, 2},
		{"metal_bmc_call_errors_total", map[string]string{"protocol": "redfish", "op": "power status"}, 1},
		{"metal_machines", map[string]string{"state": "provisioning"}, 3},
		{"metal_machines", map[string]string{"state": "failed"}, 0},
		{"metal_inventory_up", nil, 1},
		{"metal_dhcp_leases_in_use", nil, 0},
	})
	// HTTP bytes: two full kernels plus the 404 page's body.
	if got, _ := value(fams, "metal_http_response_bytes_total", map[string]string{"route": "files"}); got < float64(2*len(kernel)) {
		t.Errorf("http bytes of /files = %v, want at least %d", got, 2*len(kernel))
	}

	// Machines by state follow the store at the next scrape.
	mc, err := lab.Store.Machine(ctx, "db-01")
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.SetState(inventory.StateFailed, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Store.PutMachine(ctx, mc); err != nil {
		t.Fatal(err)
	}
	check(t, scrape(t, scrapeSrv.URL), []want{
		{"metal_machines", map[string]string{"state": "provisioning"}, 2},
		{"metal_machines", map[string]string{"state": "failed"}, 1},
	})
}

// TestDHCPMetrics: a real udhcpc in a lab namespace gets its reservation
// from metal's DHCP server answering from the store; the packets and the
// lease show in the scrape.
func TestDHCPMetrics(t *testing.T) {
	t.Parallel()
	busybox := pxetest.RequireTool(t, "busybox", "busybox-static")
	lab := apitest.New(t, "../api/testdata/site.hcl")
	nl := pxetest.NewLab(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	policy, err := storepolicy.New(ctx, lab.Store, storepolicy.Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	var m *metrics.Metrics
	cfg := dhcp.Config{
		Interface: pxetest.BridgeName, ServerIP: pxetest.ServerIP,
		Subnets:     []dhcp.Subnet{{CIDR: pxetest.LabSubnet, LeaseTime: 10 * time.Minute}},
		HTTPBaseURL: "http://192.0.2.1:8080",
		Observe:     func(msgType, result string) { m.ObserveDHCP(msgType, result) },
	}
	srv, err := dhcp.NewServer(cfg, policy, nil, discard())
	if err != nil {
		t.Fatal(err)
	}
	m = metrics.New(metrics.Options{Store: lab.Store, LeasesInUse: srv.Handler().LeasesInUse})
	scrapeSrv := httptest.NewServer(m.Handler())
	t.Cleanup(scrapeSrv.Close)
	done := make(chan error, 1)
	go func() { done <- nl.NS().Do(func() error { return srv.Serve(ctx) }) }()
	t.Cleanup(func() { cancel(); <-done })

	script := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:00:02:01") // web-01, reserved 192.0.2.11
	host := nl.AddHost("web01", mac)
	var out []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Retried: the server may not have bound port 67 yet.
		out, err = host.Command(ctx, busybox, "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", script).CombinedOutput()
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	eventually(t, scrapeSrv.URL, []want{
		{"metal_dhcp_packets_total", map[string]string{"type": "discover", "result": "offer"}, 1},
		{"metal_dhcp_packets_total", map[string]string{"type": "request", "result": "ack"}, 1},
		{"metal_dhcp_leases_in_use", nil, 1},
	})
	if leased, ok := srv.Handler().LeasedIP(mac); !ok || leased.String() != "192.0.2.11" {
		t.Errorf("leased %v, want the reservation 192.0.2.11", leased)
	}
}

// TestApplyDurations: Run watches the store's apply runs; a run and its
// steps written as the engine writes them show as durations taken from
// their recorded times.
func TestApplyDurations(t *testing.T) {
	t.Parallel()
	lab := apitest.New(t, "../api/testdata/site.hcl")
	m := metrics.New(metrics.Options{Store: lab.Store})
	scrapeSrv := httptest.NewServer(m.Handler())
	t.Cleanup(scrapeSrv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	// A run that finished before Run started (an earlier daemon's) is
	// not counted again.
	if _, err := lab.Store.PutApplyRun(ctx, inventory.ApplyRun{ID: "old", State: inventory.RunDone, StartedAt: t0, FinishedAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Run is watching once it says so.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if up, _ := value(scrape(t, scrapeSrv.URL), "metal_apply_watch_up", nil); up == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not start watching apply runs")
		}
	}
	run, err := lab.Store.PutApplyRun(ctx, inventory.ApplyRun{ID: "r1", State: inventory.RunRunning, StartedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	steps := []inventory.ApplyStep{
		{Machine: "web-01", Step: "power-off", State: inventory.RunRunning, UpdatedAt: t0},
		{Machine: "web-01", Step: "install", State: inventory.RunRunning, UpdatedAt: t0.Add(5 * time.Second)},
		{Machine: "web-01", Step: "install", State: inventory.RunRunning, UpdatedAt: t0.Add(60 * time.Second)}, // progress
		{Machine: "web-01", Step: "install", State: inventory.RunDone, UpdatedAt: t0.Add(125 * time.Second)},
		{Machine: "web-02", Step: "install", State: inventory.RunRunning, UpdatedAt: t0.Add(5 * time.Second)},
		{Machine: "web-02", Step: "install", State: inventory.RunFailed, Error: "checksum", UpdatedAt: t0.Add(35 * time.Second)},
	}
	revs := map[string]int64{}
	for _, s := range steps {
		s.Revision = revs[s.Machine]
		got, err := lab.Store.PutApplyStep(ctx, run.ID, s)
		if err != nil {
			t.Fatal(err)
		}
		revs[s.Machine] = got.Revision
	}
	run.State, run.FinishedAt = inventory.RunFailed, t0.Add(130*time.Second)
	if _, err := lab.Store.PutApplyRun(ctx, run); err != nil {
		t.Fatal(err)
	}

	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(10 * time.Second); ; {
		fams = scrape(t, scrapeSrv.URL)
		if n, _ := value(fams, "metal_apply_duration_seconds", map[string]string{"state": "failed"}); n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := map[string]float64{}
	for _, f := range []string{"metal_apply_duration_seconds", "metal_apply_step_duration_seconds"} {
		for _, mt := range fams[f].GetMetric() {
			key := f
			for _, l := range mt.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			got[key+" count"] = float64(mt.GetHistogram().GetSampleCount())
			got[key+" sum"] = mt.GetHistogram().GetSampleSum()
		}
	}
	wantSums := map[string]float64{
		"metal_apply_duration_seconds state=failed count":                   1,
		"metal_apply_duration_seconds state=failed sum":                     130,
		"metal_apply_step_duration_seconds state=done step=power-off count": 1,
		"metal_apply_step_duration_seconds state=done step=power-off sum":   5,
		"metal_apply_step_duration_seconds state=done step=install count":   1,
		"metal_apply_step_duration_seconds state=done step=install sum":     120,
		"metal_apply_step_duration_seconds state=failed step=install count": 1,
		"metal_apply_step_duration_seconds state=failed step=install sum":   30,
	}
	if diff := cmp.Diff(wantSums, got); diff != "" {
		t.Errorf("apply durations (-want +got):\n%s", diff)
	}
}

// TestNilMetrics: a daemon without metrics passes nil; every hook is a
// no-op and the handler answers 404.
func TestNilMetrics(t *testing.T) {
	t.Parallel()
	var m *metrics.Metrics
	m.ObserveDHCP("discover", "offer")
	m.ObserveTFTP("ok", 10)
	m.ObserveHTTP("/files/x", 200, 10)
	m.ObserveBMC("power status", "redfish", time.Second, nil)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("nil metrics handler: %d", rec.Code)
	}
	if got := metrics.Route("/images/debian.raw"); got != "images" {
		t.Errorf("Route = %q", got)
	}
	if got := metrics.Route("/../../etc/passwd"); got != "other" {
		t.Errorf("Route of a hostile path = %q", got)
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
