package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metal-dev/metal/internal/procstat"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/site"
)

func TestStatsOf(t *testing.T) {
	tests := map[string]struct {
		in   []float64
		want Stats
	}{
		"none":  {nil, Stats{}},
		"one":   {[]float64{4}, Stats{Min: 4, Median: 4, Max: 4, Runs: 1}},
		"odd":   {[]float64{9, 1, 5}, Stats{Min: 1, Median: 5, Max: 9, Runs: 3}},
		"even":  {[]float64{4, 1, 3, 10}, Stats{Min: 1, Median: 3.5, Max: 10, Runs: 4}},
		"equal": {[]float64{2, 2, 2}, Stats{Min: 2, Median: 2, Max: 2, Runs: 3}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := append([]float64(nil), tc.in...)
			if diff := cmp.Diff(tc.want, statsOf(tc.in)); diff != "" {
				t.Errorf("statsOf(%v) (-want +got):\n%s", tc.in, diff)
			}
			if diff := cmp.Diff(in, tc.in); diff != "" {
				t.Errorf("statsOf changed its input:\n%s", diff)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	tests := map[string]struct {
		metal, peer []float64
		target      float64
		wantRatio   float64
		wantMet     bool
	}{
		"ahead":       {[]float64{300, 310, 290}, []float64{100, 200, 150}, 1.5, 2, true},
		"exactly":     {[]float64{150}, []float64{100}, 1.5, 1.5, true},
		"short":       {[]float64{80, 90, 100}, []float64{100, 100, 100}, 1.0, 0.9, false},
		"no peer run": {[]float64{80}, nil, 1.0, 0, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := compare("m", "u", statsOf(tc.metal), "peer", statsOf(tc.peer), tc.target)
			got := struct {
				Ratio float64
				Met   bool
			}{r.Ratio, r.Met}
			want := struct {
				Ratio float64
				Met   bool
			}{tc.wantRatio, tc.wantMet}
			if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrintTable(t *testing.T) {
	results := []Result{
		compare("DHCP", "leases/s", statsOf([]float64{3000, 3100, 2900}), "dnsmasq", statsOf([]float64{1000, 1100, 900}), 1.5),
		compare("TFTP", "MiB/s", statsOf([]float64{20, 22, 24}), "tftpd-hpa", statsOf([]float64{30, 30, 30}), 1.0),
		{Measure: "TFTP windowsize", Note: "n/a: not negotiated"},
		{Measure: "plan", Unit: "s", Metal: statsOf([]float64{0.5}), Target: "< 1 s", Met: true},
	}
	results[1].Limit = &Limit{What: "round trips", Value: statsOf([]float64{40, 44, 48})}
	var b bytes.Buffer
	printTable(&b, results)
	var got [][]string
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		got = append(got, strings.Fields(line))
	}
	want := [][]string{
		{"MEASURE", "METAL", "(min/median/max)", "PEER", "PEER", "(min/median/max)", "RATIO", "OF", "LIMIT", "TARGET", "MET"},
		{"DHCP", "vs", "dnsmasq", "2900/3000/3100", "leases/s", "dnsmasq", "900/1000/1100", "leases/s", "3.00×", "-", "≥", "1.5×", "yes"},
		{"TFTP", "vs", "tftpd-hpa", "20.0/22.0/24.0", "MiB/s", "tftpd-hpa", "30.0/30.0/30.0", "MiB/s", "0.73×", "50%", "≥", "1.0×", "NO", "(short", "of", "target)"},
		{"TFTP", "windowsize", "n/a:", "not", "negotiated"},
		{"plan", "0.5/0.5/0.5", "s", "-", "-", "-", "-", "<", "1", "s", "yes"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("table (-want +got):\n%s\n%s", diff, b.String())
	}
}

func TestParsePerfdhcp(t *testing.T) {
	tests := map[string]struct {
		file    string
		rate    int
		want    perfResult
		wantErr bool
	}{
		// Real reports of perfdhcp 2.2 (Debian kea-admin) against metal.
		"few drops": {file: "perfdhcp-2000.txt", rate: 2000,
			want: perfResult{Rate: 2000, Discovers: 7983, Offers: 7982, Requests: 7982, Acks: 7930, Seconds: 4,
				LeasesPerSec: 7930.0 / 4, DropRate: 1 - 7930.0/7983}},
		"overloaded": {file: "perfdhcp-5000.txt", rate: 5000,
			want: perfResult{Rate: 5000, Discovers: 19930, Offers: 16428, Requests: 16428, Acks: 13331, Seconds: 4,
				LeasesPerSec: 13331.0 / 4, DropRate: 1 - 13331.0/19930}},
		"no report": {file: "", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out []byte
			if tc.file != "" {
				var err error
				if out, err = os.ReadFile(filepath.Join("testdata", tc.file)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := parsePerfdhcp(out, tc.rate, 4*time.Second)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestMaxRate runs the search against servers with a known capacity: the
// answer is the best rate that passed, within the bisection's resolution
// (a server of capacity c passes every rate up to c/(1-dhcpMaxDrop)).
func TestMaxRate(t *testing.T) {
	tests := map[string]struct {
		capacity, start int
		wantLo, wantHi  int
		// glitch is a rate whose first probe fails, as under a moment's
		// load from other work.
		glitch int
	}{
		"capacity 2,000":    {capacity: 2000, start: 250, wantLo: 2010, wantHi: 2051},
		"capacity 7,150":    {capacity: 7150, start: 250, wantLo: 7190, wantHi: 7333},
		"from a late start": {capacity: 7150, start: 5400, wantLo: 7190, wantHi: 7333},
		"capacity 300":      {capacity: 300, start: 250, wantLo: 301, wantHi: 307},
		"below the start":   {capacity: 120, start: 250, wantLo: 100, wantHi: 123},
		"beyond the range":  {capacity: 1 << 30, start: 250, wantLo: 32000, wantHi: dhcpMaxRate},
		"a glitch at 1,000": {capacity: 7150, start: 250, glitch: 1000, wantLo: 7190, wantHi: 7333},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var probes []int
			best, err := maxRate(tc.start, func(rate int) (perfResult, error) {
				probes = append(probes, rate)
				acks := min(rate, tc.capacity)
				if rate == tc.glitch && slices.Index(probes, rate) == len(probes)-1 {
					acks = rate / 2
				}
				return perfResult{Rate: rate, Discovers: rate, Acks: acks, LeasesPerSec: float64(acks),
					DropRate: 1 - float64(acks)/float64(rate)}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if best.Rate < tc.wantLo || best.Rate > tc.wantHi {
				t.Errorf("best rate %d, want in [%d, %d] (probes %v)", best.Rate, tc.wantLo, tc.wantHi, probes)
			}
			if len(probes) > 14 {
				t.Errorf("%d probes, want at most 14: %v", len(probes), probes)
			}
		})
	}
}

func TestTransferRate(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    float64
		wantErr bool
	}{
		"64 MiB in 2 s": {in: "67108864 2.000000", want: 32},
		"short":         {in: "1000 2.0", wantErr: true},
		"garbage":       {in: "curl: (7) failed", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := transferRate(tc.in, 64<<20)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// requirePeer skips when a peer is not installed (make bench-deps installs
// them all).
func requirePeer(t *testing.T, program, pkg string) string {
	t.Helper()
	p, err := lookTool(program)
	if err != nil {
		t.Skipf("%s not installed (Debian package %s; `make bench-deps`)", program, pkg)
	}
	return p
}

func TestKeaAcceptsConfig(t *testing.T) {
	kea := requirePeer(t, "kea-dhcp4", "kea-dhcp4-server")
	dir := t.TempDir()
	conf := filepath.Join(dir, "kea.json")
	for _, known := range [][]dhcpHost{nil, {floodKnown}} {
		if err := os.WriteFile(conf, keaConfig(dir, "lo", known...), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(kea, "-t", conf)
		cmd.Env = append(os.Environ(), keaEnv(dir)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kea-dhcp4 -t: %v\n%s\n%s", err, out, keaConfig(dir, "lo", known...))
		}
	}
}

func TestNginxAcceptsConfig(t *testing.T) {
	nginx := requirePeer(t, "nginx", "nginx-light")
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, nginxConfig(dir, dir, testenv.FreeAddr(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nginx, "-t", "-p", dir, "-c", conf, "-g", "daemon off;").CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

func TestDnsmasqAcceptsArgs(t *testing.T) {
	dnsmasq := requirePeer(t, "dnsmasq", "dnsmasq-base")
	dir := t.TempDir()
	for _, known := range [][]dhcpHost{nil, {floodKnown}} {
		if out, err := exec.Command(dnsmasq, append(dnsmasqArgs(dir, "lo", known...), "--test")...).CombinedOutput(); err != nil {
			t.Fatalf("dnsmasq --test: %v\n%s", err, out)
		}
	}
}

// TestTftpdAcceptsArgs starts tftpd-hpa with the benchmark's arguments
// and fetches a file from it with curl, as the TFTP row does.
func TestTftpdAcceptsArgs(t *testing.T) {
	// tftpd-hpa chroots and drops to --user: as the bench runs it, as root.
	testenv.Root(t, "tftpd-hpa's chroot")
	tftpd := requirePeer(t, "in.tftpd", "tftpd-hpa")
	curl := requirePeer(t, "curl", "curl")
	root := t.TempDir()
	want := []byte("a file for tftpd-hpa\n")
	if err := os.WriteFile(filepath.Join(root, "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := freePort("udp")
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc("in.tftpd", filepath.Join(t.TempDir(), "log"), nil, append([]string{tftpd}, tftpdArgs(root, addr)...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	var got []byte
	for range 50 { // until it listens
		got, err = exec.Command(curl, "-sS", "--max-time", "10", "--tftp-blksize", "1468", "tftp://"+addr+"/f").Output()
		if err == nil || p.exited() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("curl: %v (tftpd: %v)", err, p.exited())
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("file (-want +got):\n%s", diff)
	}
}

// TestAtftpdWindowed starts atftpd as the TFTP rows do (unpacked from
// Debian's package, not installed) and fetches a file from it with atftp
// asking for windowsize: atftpd must agree to it, or the row compares
// metal's windows with lockstep.
func TestAtftpdWindowed(t *testing.T) {
	// atftpd drops to --user root.root: as the bench runs it, as root.
	testenv.Root(t, "atftpd's --user")
	atftp := requirePeer(t, "atftp", "atftp")
	root := t.TempDir()
	want := bytes.Repeat([]byte("a file for atftpd\n"), 10000)
	if err := os.WriteFile(filepath.Join(root, "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &config{ctx: context.Background(), work: t.TempDir()}
	addr, p, err := startAtftpd(cfg, root)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	host, port, _ := net.SplitHostPort(addr)
	out := filepath.Join(t.TempDir(), "f")
	var trace []byte
	for range 50 { // until it listens
		trace, err = exec.Command(atftp, "--trace", "--option", "windowsize 16", "--option", "blksize 1468",
			"-g", "-r", "f", "-l", out, host, port).CombinedOutput()
		if err == nil || p.exited() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("atftp: %v (atftpd: %v)\n%s", err, p.exited(), trace)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Errorf("fetched %d bytes, not the %d served", len(got), len(want))
	}
	if !bytes.Contains(trace, []byte("windowsize: 16")) {
		t.Errorf("atftpd did not agree to windowsize 16; atftp's trace:\n%.600s", trace)
	}
}

// TestMetalSitesValid checks the sites the benchmark gives `metal serve`
// load without diagnostics, and declare what the rows expect.
func TestMetalSitesValid(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]struct {
		src          []byte
		wantMachines int
		wantNetworks int
	}{
		"dhcp":       {src: metalDHCPSite(dir, "mbs1"), wantMachines: 0, wantNetworks: 1},
		"dhcp flood": {src: metalDHCPSite(dir, "mbs1", floodKnown), wantMachines: 1, wantNetworks: 1},
		"http":       {src: metalHTTPSite(dir, "127.0.0.1:8080"), wantMachines: httpMachines, wantNetworks: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res, diags := site.Load(name+".hcl", tc.src, site.Options{})
			if diags.HasErrors() {
				t.Fatalf("%s\n%s", diags.Error(), tc.src)
			}
			got := []int{len(res.Site.Machines), len(res.Site.Networks)}
			if diff := cmp.Diff([]int{tc.wantMachines, tc.wantNetworks}, got); diff != "" {
				t.Errorf("machines, networks (-want +got):\n%s", diff)
			}
		})
	}
	// The HTTP row's URLs name the MACs the site declares.
	res, _ := site.Load("http.hcl", metalHTTPSite(dir, "127.0.0.1:8080"), site.Options{})
	macs := map[string]bool{}
	for _, m := range res.Site.Machines {
		macs[m.MAC.String()] = true
	}
	for i := 1; i <= httpMachines; i++ {
		if !macs[httpMAC(i).String()] {
			t.Fatalf("machine %d: MAC %s not declared by the site", i, httpMAC(i))
		}
	}
}

// TestTreeCPUSeconds counts a child's CPU with its parent's, as nginx's
// workers are counted with their master: a shell that only waits starts
// a child that spins.
func TestTreeCPUSeconds(t *testing.T) {
	cmd := exec.Command("sh", "-c", "yes >/dev/null & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group this test started
		cmd.Wait()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		tree, err := treeCPUSeconds(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		st, err := procstat.Read(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		own := st.UTime + st.STime
		if tree >= 0.2 && float64(own)/clockTicks < tree/2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tree %.2f CPU-s, the waiting shell alone %.2f: the spinning child is not counted", tree, float64(own)/clockTicks)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMarkdownReport: the report names the machine and has a row per
// result; the README's table between its markers becomes the report, the
// rest of the README unchanged.
func TestMarkdownReport(t *testing.T) {
	results := []Result{
		compare("TFTP", "MiB/s", statsOf([]float64{20, 22, 24}), "tftpd-hpa", statsOf([]float64{30, 30, 30}), 1.0),
		{Measure: "http", Note: "FAILED: nginx | exited"},
	}
	results[0].Limit = &Limit{What: "round trips", Value: statsOf([]float64{44})}
	h := host{Machine: "QEMU Standard PC", CPU: "2 × AMD EPYC", Memory: "3.8 GiB", Kernel: "Linux 6.1.0", OS: "Debian GNU/Linux 12 (bookworm)",
		Date: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	var b bytes.Buffer
	writeMarkdown(&b, h, 5, results)
	want := `Run of 6 Dec 2026 12:00 UTC, 5 runs of each measure, medians.

| machine | CPU | memory | kernel | OS |
|---|---|---|---|---|
| QEMU Standard PC | 2 × AMD EPYC | 3.8 GiB | Linux 6.1.0 | Debian GNU/Linux 12 (bookworm) |

| measure | metal | peer | ratio | % of limit | target | met |
|---|---|---|---|---|---|---|
| TFTP vs tftpd-hpa | 22.0 MiB/s | tftpd-hpa 30.0 | 0.73× | 50% of round trips 44.0 | ≥ 1.0× | **no** (short of target) |
| http | FAILED: nginx \| exited | | | | | |
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}

	readme := "# metal\n\n## Benchmarks\n\n" + readmeBegin + "\nold table\n" + readmeEnd + "\n\n## Layout\n"
	got, err := replaceBetweenMarkers([]byte(readme), b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if want := "# metal\n\n## Benchmarks\n\n" + readmeBegin + "\n" + b.String() + readmeEnd + "\n\n## Layout\n"; string(got) != want {
		t.Errorf("README:\n%s", got)
	}
	if _, err := replaceBetweenMarkers([]byte("# metal\n"), b.Bytes()); !errors.Is(err, errNoMarkers) {
		t.Errorf("README without markers: err %v", err)
	}
}

// TestLimits: the limits measure something on this machine.
func TestLimits(t *testing.T) {
	rt, err := udpRoundTrips(1468, 200)
	if err != nil || rt <= 0 {
		t.Errorf("udpRoundTrips: %v, %v", rt, err)
	}
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sf, err := sendfileRate(context.Background(), f, 3<<20)
	if err != nil || sf <= 0 {
		t.Errorf("sendfileRate: %v, %v", sf, err)
	}
}

// TestWipeRow: the wipe row erases a small device with metal and with dd,
// and says what it erased (a loop device as root, else a file).
func TestWipeRow(t *testing.T) {
	cfg := &config{ctx: context.Background(), work: t.TempDir(), runs: 3, logger: slog.New(slog.DiscardHandler)}
	rows, err := wipeRow(cfg, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	r := rows[0]
	t.Logf("%s: metal %s, %s %s, %s of limit", r.Measure, fmtStats(r.Metal, r.Unit), r.Peer, fmtStats(*r.PeerVal, r.Unit), r.pctOfLimit())
	if r.Metal.Runs != 3 || r.PeerVal == nil || r.PeerVal.Runs != 3 || r.Limit == nil || r.pctOfLimit() == "-" {
		t.Errorf("row: %+v", r)
	}
	if !strings.Contains(r.Measure, "16 MiB") || !strings.Contains(r.Measure, "dd if=/dev/zero oflag=direct") {
		t.Errorf("measure %q", r.Measure)
	}
}

func TestOfLimit(t *testing.T) {
	lim := &Limit{What: "disk", Value: statsOf([]float64{1000})}
	tests := map[string]struct {
		metal   float64
		limit   *Limit
		wantMet bool
	}{
		"at 95%":   {950, lim, true},
		"at 94%":   {940, lim, false},
		"no limit": {950, nil, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := compare("m", "u", statsOf([]float64{tc.metal}), "dd", statsOf([]float64{2000}), 1.0)
			r.Limit = tc.limit
			r = ofLimit(r, 0.95, "dd does less")
			if r.Met != tc.wantMet || r.Target != "≥ 95% of limit" {
				t.Errorf("met %v target %q, want met %v", r.Met, r.Target, tc.wantMet)
			}
			wantNote := "dd does less"
			if !tc.wantMet {
				wantNote = "short of target; dd does less"
			}
			if r.Note != wantNote {
				t.Errorf("note %q, want %q", r.Note, wantNote)
			}
		})
	}
}
