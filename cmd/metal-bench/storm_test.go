package main

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/site"
)

// TestMain lets the test binary be the storm's client process, as
// metal-bench itself is in a run.
func TestMain(m *testing.M) {
	if os.Getenv(stormClientEnv) == "1" {
		stormClientMain()
		return
	}
	os.Exit(m.Run())
}

// TestStormSmall runs a storm of a few machines once against metal serve
// and once against dnsmasq with nginx: every machine must get through
// DHCP, TFTP, DHCP as iPXE, its script, kernel and initrd on both.
func TestStormSmall(t *testing.T) {
	testenv.Root(t, "network namespaces")
	requirePeer(t, "dnsmasq", "dnsmasq-base")
	requirePeer(t, "nginx", "nginx-light")
	metal, err := testenv.BuildMetal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// nginx's workers run as nobody and read the files from here, as in
	// a run (main makes its scratch directory readable the same way).
	work, err := os.MkdirTemp("", "metal-bench-storm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config{ctx: ctx, metal: metal, work: work, logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	got, err := runStorms(cfg, 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"metal", stormPeer} {
		if len(got[s]) != 1 {
			t.Fatalf("%s: %d runs, want 1", s, len(got[s]))
		}
		if r := got[s][0]; r.lost > 0 {
			t.Errorf("%s: %d of 5 machines lost; the first: %s", s, r.lost, r.firstErr)
		}
		// Servers that answered packets slept between them and woke.
		if r := got[s][0]; r.switches == 0 {
			t.Errorf("%s: %d context switches over the storm", s, r.switches)
		}
	}
}

func TestStormSiteValid(t *testing.T) {
	hosts := append(stormHosts(stormMachines), stormProbe)
	res, diags := site.Load("storm.hcl", stormSite(t.TempDir(), "mbs1", hosts), site.Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if diff := cmp.Diff(len(hosts), len(res.Site.Machines)); diff != "" {
		t.Errorf("machines (-want +got):\n%s", diff)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	tests := map[string]struct {
		p    float64
		want float64
	}{
		"p50":  {50, 5},
		"p99":  {99, 10},
		"p10":  {10, 1},
		"p100": {100, 10},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := percentile(xs, tc.p); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

// TestStormRowsSteps: the p50 row says where a machine's time goes, step
// by step, for metal and its peer.
func TestStormRowsSteps(t *testing.T) {
	run := func(scale float64) stormRun {
		return stormRun{last: 1, p50: 0.5, p99: 0.9, cpu: 1,
			steps: [stormSteps]float64{0.1 * scale, 0.2 * scale, 0.05 * scale, 0.01 * scale, 0.3 * scale}}
	}
	got := map[string][]stormRun{"metal": {run(1), run(1), run(1)}, stormPeer: {run(2), run(2), run(2)}}
	rows := stormRows(200, 3, got)
	want := "p50 per step, s (median, metal/peer): dhcp 0.1/0.2, tftp 0.2/0.4, dhcp_ipxe 0.05/0.1, script 0.01/0.02, kernel_initrd 0.3/0.6"
	if diff := cmp.Diff(want, rows[2].Note); diff != "" {
		t.Errorf("p50 row note (-want +got):\n%s", diff)
	}
}

// TestStormRowsUsage: the first row says what the servers used per storm,
// medians of the runs: CPU, page faults and context switches.
func TestStormRowsUsage(t *testing.T) {
	run := func(cpu float64, faults, switches uint64) stormRun {
		return stormRun{last: 1, p50: 0.5, p99: 0.9, cpu: cpu, faults: faults, switches: switches}
	}
	got := map[string][]stormRun{
		"metal":   {run(1, 5000, 11000), run(0.9, 4000, 12000), run(1.1, 6000, 10000)},
		stormPeer: {run(0.7, 300, 3000), run(0.6, 200, 4000), run(0.8, 400, 3500)},
	}
	rows := stormRows(200, 3, got)
	want := "server CPU-seconds per storm (median): metal 1, dnsmasq + nginx 0.7; " +
		"page faults per storm (median): metal 5000, dnsmasq + nginx 300; " +
		"context switches per storm (median): metal 11000, dnsmasq + nginx 3500"
	if diff := cmp.Diff(want, rows[0].Note); diff != "" {
		t.Errorf("first row's note (-want +got):\n%s", diff)
	}
}
