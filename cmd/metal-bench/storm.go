package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/pxe/bootfiles"
)

// The boot storm: power comes back to a rack and stormMachines machines
// netboot at once, each starting within stormSpread of the first: DHCP as
// a BIOS PXE ROM, TFTP of iPXE (undionly.kpxe), DHCP again as iPXE, its
// script over HTTP, then a kernel and an initrd. Every machine is declared
// with its address (a rack being installed: its intent boots the install
// kernel), and speaks TFTP and HTTP from that address. A machine not done
// within stormGiveUp is lost.
//
// N is 200 unless --storm-machines says otherwise, and at most
// maxStormMachines: the lab may use only one documentation /24, and a
// storm of 1,000 machines needs more addresses than that.
const (
	stormMachines    = 200
	maxStormMachines = 240 // 192.0.2.10 to .249; the probe is .250
	stormSpread      = time.Second
	stormGiveUp      = 2 * time.Minute
	stormKernelSize  = 4 << 20
	stormInitrdSize  = 4 << 20
	stormHTTP        = labServerIP + ":8080"
)

// stormHosts are the storm's machines: MACs 52:54:00:cc:..., addresses
// from 192.0.2.10 up.
func stormHosts(n int) []dhcpHost {
	hosts := make([]dhcpHost, n)
	for i := range hosts {
		hosts[i] = dhcpHost{name: fmt.Sprintf("storm-%03d", i), mac: fmt.Sprintf("52:54:00:cc:%02x:%02x", i>>8, i&0xff),
			ip: fmt.Sprintf("192.0.2.%d", 10+i)}
	}
	return hosts
}

// stormProbe is the machine that checks the servers answer before the
// storm; it is declared like the others.
var stormProbe = dhcpHost{name: "probe", mac: "52:54:00:cc:ff:ff", ip: "192.0.2.250"}

// stormRun is one storm against one server, summarised.
type stormRun struct {
	last, p50, p99 float64 // seconds: the last machine done; per machine
	lost           int
	firstErr       string
	cpu            float64 // CPU-seconds the servers used
	// faults and switches are the servers' minor page faults and context
	// switches (voluntary and not) over the storm: on a paravirtualised
	// host each costs a trip through the hypervisor.
	faults, switches uint64
	steps            [stormSteps]float64
}

// benchStorm runs the storm against `metal serve` and against dnsmasq
// (DHCP and TFTP) with nginx (HTTP), alternating, each started fresh for
// each run.
func benchStorm(cfg *config) ([]Result, error) {
	runs, err := runStorms(cfg, cfg.stormMachines, cfg.runs)
	if err != nil {
		return nil, err
	}
	return stormRows(cfg.stormMachines, cfg.runs, runs), nil
}

const stormPeer = "dnsmasq + nginx"

func stormRows(n, runs int, got map[string][]stormRun) []Result {
	measure := fmt.Sprintf("Boot storm, %d machines on within %v (DHCP, TFTP, DHCP as iPXE, script, %d MiB kernel + %d MiB initrd)",
		n, stormSpread, stormKernelSize>>20, stormInitrdSize>>20)
	pick := func(server string, f func(stormRun) float64) Stats {
		var xs []float64
		for _, r := range got[server] {
			xs = append(xs, f(r))
		}
		return statsOf(xs)
	}
	lost := func(server string) (machines, inRuns int) {
		for _, r := range got[server] {
			machines += r.lost
			if r.lost > 0 {
				inRuns++
			}
		}
		return machines, inRuns
	}
	var rows []Result
	for _, m := range []struct {
		what string
		f    func(stormRun) float64
	}{
		{"last machine done", func(r stormRun) float64 { return r.last }},
		{"p99 per machine", func(r stormRun) float64 { return r.p99 }},
		{"p50 per machine", func(r stormRun) float64 { return r.p50 }},
	} {
		r := compareLower(measure+": "+m.what, "s", pick("metal", m.f), stormPeer, pick(stormPeer, m.f), 1.0)
		for _, s := range []string{"metal", stormPeer} {
			if k, in := lost(s); k > 0 {
				r.Note = join(r.Note, fmt.Sprintf("%s: %d machines lost in %d of %d runs (counted as %v)", s, k, in, runs, stormGiveUp))
				if s == "metal" {
					r.Met = false
				}
			}
		}
		rows = append(rows, r)
	}
	// What the servers used, beside the times: the CPU, and the page
	// faults and context switches that a paravirtualised host makes dear.
	for _, u := range []struct {
		what string
		f    func(stormRun) float64
	}{
		{"server CPU-seconds", func(r stormRun) float64 { return r.cpu }},
		{"page faults", func(r stormRun) float64 { return float64(r.faults) }},
		{"context switches", func(r stormRun) float64 { return float64(r.switches) }},
	} {
		rows[0].Note = join(rows[0].Note, fmt.Sprintf("%s per storm (median): metal %s, %s %s",
			u.what, num(pick("metal", u.f).Median), stormPeer, num(pick(stormPeer, u.f).Median)))
	}
	// Where a machine's time goes: the step a server is slow at shows
	// here, where the totals only add the steps up.
	var steps []string
	for i, name := range stormStepNames {
		step := func(r stormRun) float64 { return r.steps[i] }
		steps = append(steps, fmt.Sprintf("%s %s/%s", name, num(pick("metal", step).Median), num(pick(stormPeer, step).Median)))
	}
	rows[2].Note = join(rows[2].Note, "p50 per step, s (median, metal/peer): "+strings.Join(steps, ", "))
	return rows
}

// stormServer is one side of the storm, started fresh in dir.
type stormServer struct {
	name  string
	start func(lab *netLab, dir string) ([]*proc, error)
}

// runStorms runs the storm runs times against each server, alternating.
func runStorms(cfg *config, n, runs int) (map[string][]stormRun, error) {
	lab, err := newNetLab()
	if err != nil {
		return nil, err
	}
	defer lab.close()
	hosts := stormHosts(n)
	// The client namespace holds every machine's address, so that each
	// speaks from its own lease; the server reaches them over the veth.
	var batch strings.Builder
	for _, h := range append(hosts, stormProbe) {
		fmt.Fprintf(&batch, "addr add %s/32 dev %s\n", h.ip, lab.clientIf)
	}
	add := exec.Command("ip", "-n", lab.client, "-batch", "-")
	add.Stdin = strings.NewReader(batch.String())
	if out, err := add.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("client addresses: %v: %s", err, out)
	}
	files := filepath.Join(cfg.work, "storm-files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(files)
	for name, size := range map[string]int64{"vmlinuz": stormKernelSize, "initrd.img": stormInitrdSize} {
		if err := writeRandomFile(filepath.Join(files, name), size); err != nil {
			return nil, err
		}
	}
	order := stormOrder{Iface: lab.clientIf, Probe: stormMember{MAC: stormProbe.mac, IP: stormProbe.ip},
		HTTP: stormHTTP, Spread: stormSpread, GiveUp: stormGiveUp, KernelSize: stormKernelSize, InitrdSize: stormInitrdSize}
	for _, h := range hosts {
		order.Machines = append(order.Machines, stormMember{MAC: h.mac, IP: h.ip})
	}
	known := append(hosts, stormProbe)
	servers := []stormServer{
		{name: "metal", start: func(lab *netLab, dir string) ([]*proc, error) {
			return startStormMetal(cfg, lab, dir, files, known)
		}},
		{name: stormPeer, start: func(lab *netLab, dir string) ([]*proc, error) {
			return startStormPeers(lab, dir, files, known)
		}},
	}
	got := map[string][]stormRun{}
	for run := range runs {
		for _, s := range servers {
			if err := cfg.ctx.Err(); err != nil {
				return nil, err
			}
			dir := filepath.Join(cfg.work, fmt.Sprintf("storm-%s-%d", strings.Fields(s.name)[0], run))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			r, err := stormOnce(cfg.ctx, lab, s, dir, order)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			attrs := []any{"server", s.name, "run", run + 1, "last_s", num(r.last), "p50_s", num(r.p50), "p99_s", num(r.p99),
				"lost", r.lost, "server_cpu_s", num(r.cpu), "server_faults", r.faults, "server_switches", r.switches}
			for i, name := range stormStepNames {
				attrs = append(attrs, name+"_p50_s", num(r.steps[i]))
			}
			if r.firstErr != "" {
				attrs = append(attrs, "first_err", r.firstErr)
			}
			cfg.logger.Info("storm run", attrs...)
			got[s.name] = append(got[s.name], r)
			// METAL_BENCH_KEEP keeps each run's logs, as for every measure.
			if os.Getenv("METAL_BENCH_KEEP") == "" {
				os.RemoveAll(dir)
			}
		}
	}
	return got, nil
}

// stormOnce starts s, runs the storm's clients against it and stops it.
func stormOnce(ctx context.Context, lab *netLab, s stormServer, dir string, order stormOrder) (stormRun, error) {
	procs, err := s.start(lab, dir)
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	if err != nil {
		return stormRun{}, err
	}
	used := func() (usage, error) {
		var sum usage
		for _, p := range procs {
			if err := p.exited(); err != nil {
				return usage{}, err
			}
			u, err := treeUsage(p.cmd.Process.Pid, true)
			if err != nil {
				return usage{}, err
			}
			sum = sum.plus(u)
		}
		return sum, nil
	}
	rep, used0, err := stormClients(ctx, lab, dir, order, used)
	if err != nil {
		return stormRun{}, err
	}
	used1, err := used()
	if err != nil {
		return stormRun{}, err
	}
	r := summariseStorm(rep, order.GiveUp)
	d := used1.minus(used0)
	r.cpu, r.faults, r.switches = d.cpu, d.minflt, d.vcs+d.nvcs
	return r, nil
}

// stormClients runs the client process in the client namespace. What the
// servers used is read (used) once the client says the servers answer,
// just before the storm: it counts the storm, not the servers' start.
func stormClients(ctx context.Context, lab *netLab, dir string, order stormOrder, used func() (usage, error)) (stormReport, usage, error) {
	exe, err := os.Executable()
	if err != nil {
		return stormReport{}, usage{}, err
	}
	in, err := json.Marshal(order)
	if err != nil {
		return stormReport{}, usage{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, order.GiveUp+2*time.Minute)
	defer cancel()
	logPath := filepath.Join(dir, "clients.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return stormReport{}, usage{}, err
	}
	defer logf.Close()
	argv := lab.in(lab.client, exe)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), stormClientEnv+"=1")
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return stormReport{}, usage{}, err
	}
	if err := cmd.Start(); err != nil {
		return stormReport{}, usage{}, err
	}
	// The client writes one line when the servers answer, then its report.
	dec := json.NewDecoder(stdout)
	var ready struct{ Ready bool }
	var used0 usage
	rerr := dec.Decode(&ready)
	if rerr == nil {
		used0, rerr = used()
	}
	var rep stormReport
	if rerr == nil {
		rerr = dec.Decode(&rep)
	}
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil || rerr != nil {
		return stormReport{}, usage{}, fmt.Errorf("storm clients: %v %v: %s", err, rerr, tail(logPath, 600))
	}
	if len(rep.Machines) != len(order.Machines) {
		return stormReport{}, usage{}, fmt.Errorf("storm clients reported %d machines, want %d", len(rep.Machines), len(order.Machines))
	}
	return rep, used0, nil
}

// summariseStorm reduces a report: a lost machine counts as giveUp.
func summariseStorm(rep stormReport, giveUp time.Duration) stormRun {
	var r stormRun
	var took []float64
	var steps [stormSteps][]float64
	for _, m := range rep.Machines {
		d, end := m.End-m.Start, m.End
		if m.Err != "" {
			r.lost++
			if r.firstErr == "" {
				r.firstErr = m.Err
			}
			d, end = giveUp, m.Start+giveUp
		}
		took = append(took, d.Seconds())
		r.last = max(r.last, end.Seconds())
		for i, s := range m.Steps {
			if m.Err == "" {
				steps[i] = append(steps[i], s.Seconds())
			}
		}
	}
	r.p50, r.p99 = percentile(took, 50), percentile(took, 99)
	for i := range steps {
		r.steps[i] = percentile(steps[i], 50)
	}
	return r
}

// percentile is the nearest-rank percentile p of xs; 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	k := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// startStormMetal starts `metal serve` for the storm: the machines
// declared in the site, each with an install intent already in its state
// store (as the engine leaves it when it starts a rack's rollout), the
// kernel and initrd under its files.
func startStormMetal(cfg *config, lab *netLab, dir, files string, hosts []dhcpHost) ([]*proc, error) {
	served := filepath.Join(dir, "files", "storm")
	if err := os.MkdirAll(served, 0o755); err != nil {
		return nil, err
	}
	for _, name := range []string{"vmlinuz", "initrd.img"} {
		if err := os.Link(filepath.Join(files, name), filepath.Join(served, name)); err != nil {
			return nil, err
		}
	}
	if err := seedStormIntents(cfg.ctx, dir, hosts); err != nil {
		return nil, err
	}
	site := filepath.Join(dir, "site.hcl")
	if err := os.WriteFile(site, stormSite(dir, lab.serverIf, hosts), 0o644); err != nil {
		return nil, err
	}
	metal, err := filepath.Abs(cfg.metal)
	if err != nil {
		return nil, err
	}
	p, err := startProc("metal serve", filepath.Join(dir, "metal.log"), nil, lab.in(lab.server,
		metal, "serve", "--api-listen", "", "--state-dir", dir, "--tftp-addr", labServerIP+":69", site)...)
	if err != nil {
		return nil, err
	}
	return []*proc{p}, nil
}

// stormSite declares the storm's machines with their addresses on the
// lab's network; no pool: every machine is known.
func stormSite(dir, iface string, hosts []dhcpHost) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `site "storm" {
  state  = "file://%s/state.db"
  listen = %q
}

network "storm" {
  interface  = %q
  subnet     = %q
  gateway    = %q
  lease_time = "%ds"
}
`, dir, stormHTTP, iface, dhcpSubnet, labServerIP, dhcpLeaseSecs)
	for _, h := range hosts {
		fmt.Fprintf(&b, "\nmachine %q {\n  mac = %q\n  ip  = %q\n}\n", h.name, h.mac, h.ip)
	}
	return []byte(b.String())
}

// stormIntent is what every storm machine boots, paths on metal's HTTP
// server.
func stormIntent() inventory.BootIntent {
	return inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/files/storm/vmlinuz",
		Initrds: []string{"/files/storm/initrd.img"}, Cmdline: "console=ttyS0"}
}

// seedStormIntents writes each machine's record with its install intent
// into the state store `metal serve` then opens; serve keeps the intent
// of a machine it finds recorded.
func seedStormIntents(ctx context.Context, dir string, hosts []dhcpHost) error {
	store, err := backend.Open(ctx, "file://"+filepath.Join(dir, "state.db"), backend.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	now := time.Now()
	for _, h := range hosts {
		ip, err := netip.ParseAddr(h.ip)
		if err != nil {
			return err
		}
		m := inventory.Machine{Name: h.name, MAC: h.mac, Intent: stormIntent()}
		m.Identity.IP, m.Identity.Network = ip, "storm"
		if err := m.SetState(inventory.StateReady, "declared in the site", now); err != nil {
			return err
		}
		if err := m.SetState(inventory.StateProvisioning, "storm", now); err != nil {
			return err
		}
		if _, err := store.PutMachine(ctx, m); err != nil {
			return fmt.Errorf("seed %s: %w", h.name, err)
		}
	}
	return nil
}

// startStormPeers starts dnsmasq (DHCP and TFTP, each machine reserved,
// iPXE told of one static script) and nginx (the script, kernel and
// initrd) in the server namespace. The script is the same file for every
// machine, as a dnsmasq and nginx set-up usually has it. dnsmasq allows
// 50 TFTP transfers at once by default: --tftp-max lets it serve the
// whole storm, as its operator would for one.
func startStormPeers(lab *netLab, dir, files string, hosts []dhcpHost) ([]*proc, error) {
	tftpRoot := filepath.Join(dir, "tftp")
	www := filepath.Join(dir, "www")
	for _, d := range []string{tftpRoot, filepath.Join(www, "storm")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := copyIPXE(filepath.Join(tftpRoot, bootfiles.BIOS)); err != nil {
		return nil, err
	}
	for _, name := range []string{"vmlinuz", "initrd.img"} {
		if err := os.Link(filepath.Join(files, name), filepath.Join(www, "storm", name)); err != nil {
			return nil, err
		}
	}
	in := stormIntent()
	script := fmt.Sprintf("#!ipxe\nkernel %s initrd=initrd.img %s\ninitrd --name initrd.img %s\nboot\n", in.Kernel, in.Cmdline, in.Initrds[0])
	script = strings.ReplaceAll(script, "/files/", "/")
	if err := os.WriteFile(filepath.Join(www, "boot.ipxe"), []byte(script), 0o644); err != nil {
		return nil, err
	}
	dnsmasq, err := lookTool("dnsmasq")
	if err != nil {
		return nil, err
	}
	args := append(dnsmasqArgs(dir, lab.serverIf, hosts...),
		"--enable-tftp", "--tftp-root="+tftpRoot, "--tftp-max=1000",
		"--dhcp-match=set:ipxe,175",
		"--dhcp-boot=tag:!ipxe,"+bootfiles.BIOS,
		"--dhcp-boot=tag:ipxe,http://"+stormHTTP+"/boot.ipxe")
	dp, err := startProc("dnsmasq", filepath.Join(dir, "dnsmasq.out"), nil, lab.in(lab.server, append([]string{dnsmasq}, args...)...)...)
	if err != nil {
		return nil, err
	}
	nginx, err := lookTool("nginx")
	if err != nil {
		return []*proc{dp}, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, nginxConfig(dir, www, stormHTTP), 0o644); err != nil {
		return []*proc{dp}, err
	}
	np, err := startProc("nginx", filepath.Join(dir, "nginx.out"), nil, lab.in(lab.server, nginx, "-p", dir, "-c", conf, "-g", "daemon off;")...)
	if err != nil {
		return []*proc{dp}, err
	}
	return []*proc{dp, np}, nil
}

// copyIPXE copies the iPXE binary metal serves to BIOS clients (Debian's
// ipxe package, found as metal finds it) to path.
func copyIPXE(path string) error {
	x, err := bootfiles.FindIPXE("")
	if err != nil {
		return err
	}
	f, _, err := x.Open(bootfiles.BIOS)
	if err != nil {
		return err
	}
	defer f.Close()
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, f); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
