package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DHCP row parameters. perfdhcp reuses 200 client MACs (the lab's /24 has
// 241 pool addresses), for metal and the peers alike.
const (
	dhcpClients  = 200
	dhcpMaxDrop  = 0.025 // the row's "at ≤ 2.5% drop"
	dhcpProbe    = 4 * time.Second
	dhcpMinRate  = 100
	dhcpMaxRate  = 40000 // beyond it perfdhcp itself is the limit on 2 cores
	dhcpBisect   = 4     // bisection steps after the first failing rate
	dhcpWarmRate = 200
)

// perfResult is what one perfdhcp run reports.
type perfResult struct {
	Rate                   int     // requested exchanges/s
	Discovers, Offers      int     // DISCOVER sent, OFFER received
	Requests, Acks         int     // REQUEST sent, ACK received
	Seconds                float64 // the test period
	LeasesPerSec, DropRate float64
}

// parsePerfdhcp reads perfdhcp's report: the "sent packets" and "received
// packets" of its DISCOVER-OFFER and REQUEST-ACK sections. A DORA is
// complete when its ACK arrives; anything less counts as dropped.
func parsePerfdhcp(out []byte, rate int, period time.Duration) (perfResult, error) {
	r := perfResult{Rate: rate, Seconds: period.Seconds()}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "***Statistics for: DISCOVER-OFFER"):
			section = "do"
		case strings.HasPrefix(line, "***Statistics for: REQUEST-ACK"):
			section = "ra"
		case strings.HasPrefix(line, "***"):
			section = ""
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || section == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			continue
		}
		switch section + "/" + k {
		case "do/sent packets":
			r.Discovers = n
		case "do/received packets":
			r.Offers = n
		case "ra/sent packets":
			r.Requests = n
		case "ra/received packets":
			r.Acks = n
		}
	}
	if r.Discovers == 0 {
		return r, fmt.Errorf("perfdhcp sent no DISCOVER (its output: %.300q)", out)
	}
	r.LeasesPerSec = float64(r.Acks) / r.Seconds
	r.DropRate = 1 - float64(r.Acks)/float64(r.Discovers)
	return r, nil
}

// dhcpServer is one DHCP server under test, started fresh in dir.
type dhcpServer struct {
	name  string
	start func(lab *netLab, dir string) (*proc, error)
}

func dhcpServers(cfg *config) []dhcpServer {
	return []dhcpServer{
		{name: "metal", start: func(lab *netLab, dir string) (*proc, error) {
			site := filepath.Join(dir, "site.hcl")
			if err := os.WriteFile(site, metalDHCPSite(dir, lab.serverIf), 0o644); err != nil {
				return nil, err
			}
			metal, err := filepath.Abs(cfg.metal)
			if err != nil {
				return nil, err
			}
			// The per-MAC rate limit is off: perfdhcp's 200 clients each
			// ask many times a second, which the limit exists to refuse,
			// and the peers have no such limit.
			return startProc("metal serve", filepath.Join(dir, "metal.log"), nil, lab.in(lab.server,
				metal, "serve", "--dhcp-rate-limit", "off", "--state-dir", dir,
				"--tftp-addr", labServerIP+":6969", site)...)
		}},
		{name: "dnsmasq", start: func(lab *netLab, dir string) (*proc, error) {
			bin, err := lookTool("dnsmasq")
			if err != nil {
				return nil, err
			}
			return startProc("dnsmasq", filepath.Join(dir, "dnsmasq.out"), nil,
				lab.in(lab.server, append([]string{bin}, dnsmasqArgs(dir, lab.serverIf)...)...)...)
		}},
		{name: "kea", start: func(lab *netLab, dir string) (*proc, error) {
			bin, err := lookTool("kea-dhcp4")
			if err != nil {
				return nil, err
			}
			conf := filepath.Join(dir, "kea-dhcp4.json")
			if err := os.WriteFile(conf, keaConfig(dir, lab.serverIf), 0o644); err != nil {
				return nil, err
			}
			return startProc("kea-dhcp4", filepath.Join(dir, "kea.out"), keaEnv(dir),
				lab.in(lab.server, bin, "-c", conf)...)
		}},
	}
}

// perfdhcp runs one load of rate DORA/s for period from the client
// namespace.
func perfdhcp(ctx context.Context, lab *netLab, rate int, period time.Duration) (perfResult, error) {
	bin, err := lookTool("perfdhcp")
	if err != nil {
		return perfResult{}, err
	}
	argv := lab.in(lab.client, bin, "-4", "-l", lab.clientIf, "-R", strconv.Itoa(dhcpClients),
		"-r", strconv.Itoa(rate), "-p", strconv.Itoa(int(period.Seconds())))
	ctx, cancel := context.WithTimeout(ctx, period+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	// perfdhcp exits 3 when packets were dropped; its report is still
	// complete.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
		return perfResult{}, fmt.Errorf("perfdhcp: %v: %.300s", err, out)
	}
	return parsePerfdhcp(out, rate, period)
}

// maxRate finds the highest rate a server answers with at most
// dhcpMaxDrop of DORAs incomplete: doubling from start until one fails,
// then bisecting between the last pass and the first failure. It returns
// the leases/s achieved at the best passing rate.
func maxRate(start int, probe func(rate int) (perfResult, error)) (perfResult, error) {
	var best perfResult
	lo, hi := 0, 0
	for r := max(start, dhcpMinRate); r <= dhcpMaxRate; r *= 2 {
		res, err := probe(r)
		if err != nil {
			return best, err
		}
		if res.DropRate > dhcpMaxDrop {
			hi = r
			break
		}
		lo, best = r, res
	}
	if hi == 0 { // never failed: the load generator's ceiling
		return best, nil
	}
	if lo == 0 {
		lo = dhcpMinRate / 2
	}
	for range dhcpBisect {
		mid := (lo + hi) / 2
		if mid <= lo || mid >= hi {
			break
		}
		res, err := probe(mid)
		if err != nil {
			return best, err
		}
		if res.DropRate > dhcpMaxDrop {
			hi = mid
		} else {
			lo, best = mid, res
		}
	}
	return best, nil
}

// benchDHCP measures DORA leases/s at ≤ 2.5% drop for metal serve,
// dnsmasq and Kea, each started fresh for each run, runs alternating.
func benchDHCP(cfg *config) ([]Result, error) {
	lab, err := newNetLab()
	if err != nil {
		return nil, err
	}
	defer lab.close()
	ctx := cfg.ctx
	servers := dhcpServers(cfg)
	got := map[string][]float64{}
	start := map[string]int{}
	for run := range cfg.runs {
		for _, s := range servers {
			dir := filepath.Join(cfg.work, fmt.Sprintf("dhcp-%s-%d", s.name, run))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			res, err := measureDHCP(ctx, cfg, lab, s, dir, start[s.name])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			cfg.logger.Info("dhcp run", "server", s.name, "run", run+1, "rate", res.Rate,
				"leases_per_s", int(res.LeasesPerSec), "drop", fmt.Sprintf("%.2f%%", 100*res.DropRate))
			got[s.name] = append(got[s.name], res.LeasesPerSec)
			// Later runs start their search below this one's answer.
			start[s.name] = max(dhcpMinRate, res.Rate/2)
		}
	}
	metal := statsOf(got["metal"])
	const measure = "DHCP DORA leases/s at ≤2.5% drop, durable"
	return []Result{
		compare(measure, "leases/s", metal, "dnsmasq --no-ping", statsOf(got["dnsmasq"]), 1.5),
		compare(measure, "leases/s", metal, "kea-dhcp4 memfile (no fsync)", statsOf(got["kea"]), 1.0),
	}, nil
}

// measureDHCP starts s, warms it up (every client gets its lease, which
// also shows the server answers), finds its max rate and stops it.
func measureDHCP(ctx context.Context, cfg *config, lab *netLab, s dhcpServer, dir string, start int) (perfResult, error) {
	p, err := s.start(lab, dir)
	if err != nil {
		return perfResult{}, err
	}
	defer p.stop()
	ready := false
	for range 10 {
		time.Sleep(500 * time.Millisecond)
		if err := p.exited(); err != nil {
			return perfResult{}, err
		}
		res, err := perfdhcp(ctx, lab, dhcpWarmRate, 2*time.Second)
		if err != nil {
			return perfResult{}, err
		}
		if res.DropRate < 0.5 {
			ready = true
			break
		}
	}
	if !ready {
		return perfResult{}, fmt.Errorf("%s answers no DHCP (log %s: %s)", s.name, p.log, tail(p.log, 400))
	}
	if start == 0 {
		start = 250
	}
	return maxRate(start, func(rate int) (perfResult, error) {
		if err := p.exited(); err != nil {
			return perfResult{}, err
		}
		res, err := perfdhcp(ctx, lab, rate, dhcpProbe)
		if err == nil {
			cfg.logger.Debug("perfdhcp", "server", s.name, "rate", rate, "acks", res.Acks, "drop", res.DropRate)
		}
		return res, err
	})
}
