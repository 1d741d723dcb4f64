package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
)

// The failover rows: a disaster-recovery pair, primary and standby `metal
// serve` on one address of the lab, backing up to an sshd. The primary's
// path to the sshd is black-holed with nftables (the sshd alive, the
// primary alive and answering DHCP: a partition, the case that can
// split the brain); the standby reaches the sshd through another address
// and runs `metal promote` until it is allowed, then `metal serve`. Two
// rows:
//
//   - RTO: from the cut to the standby's first DHCP lease. Promote is
//     allowed L + M after the primary's last heartbeat, so at most L + M
//     after the cut; the rest is the promote itself and the standby's
//     start.
//   - overlap: the primary's serve exit (it stops answering DHCP by then)
//     minus the moment promote succeeded; the guarantee is <= 0 s.
//
// The interval and M are flags: make bench runs at 1 s (L = 3 s, M = 1
// s), five runs in seconds. At the default interval (5 min: L = 15 min, M
// = 60 s) one run lasts up to 16 minutes, so the row then runs once
// (metal-bench -only failover -failover-every 5m -failover-margin 60s).
const (
	failoverPoll = 200 * time.Millisecond
	// failoverStart is what the target allows beyond L + M: the promote's
	// run and the standby's start until it answers.
	failoverStart = 2 * time.Second
	// failoverSecond is the standby's address of the sshd.
	failoverSecond = "127.0.0.2"
)

// failoverMachine is the site's one machine, the client whose lease is
// timed.
var failoverMachine = dhcpHost{name: "known", mac: "02:00:00:00:00:06", ip: "192.0.2.6"}

// benchFailover measures the RTO and the overlap over cfg.runs
// failovers (one at an interval of a minute or more).
func benchFailover(cfg *config) ([]Result, error) {
	lab, err := newNetLab()
	if err != nil {
		return nil, err
	}
	defer lab.close()
	dir := filepath.Join(cfg.work, "failover")
	if err := os.MkdirAll(filepath.Join(dir, "sshd"), 0o755); err != nil {
		return nil, err
	}
	d, err := sshdtest.Run(filepath.Join(dir, "sshd"), sshdtest.Options{Netns: lab.server, Dial: netns.Dialer(lab.server), Second: failoverSecond})
	if err != nil {
		return nil, err
	}
	defer d.Kill()
	every, margin := cfg.failoverEvery, cfg.failoverMargin
	lease := 3 * every // metal serve's lease: 3 intervals
	runs := cfg.runs
	if every >= time.Minute {
		runs = 1
	}
	var rto, promoted, overlap []float64
	for run := range runs {
		r, err := failoverOnce(cfg, lab, d, filepath.Join(dir, fmt.Sprint(run)))
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", run+1, err)
		}
		cfg.logger.Info("failover run", "run", run+1, "primary_stopped", r.stopped.Round(time.Millisecond),
			"promoted", r.promoted.Round(time.Millisecond), "serving", r.serving.Round(time.Millisecond))
		rto = append(rto, r.serving.Seconds())
		promoted = append(promoted, r.promoted.Seconds())
		overlap = append(overlap, (r.stopped - r.promoted).Seconds())
	}
	bound := lease + margin
	setting := fmt.Sprintf("interval %v: L %v, M %v", every, lease, margin)
	if runs == 1 {
		setting += "; one run"
	}
	rtoRow := Result{
		Measure: fmt.Sprintf("failover RTO: primary cut off (nftables) → standby answers DHCP (%s)", setting),
		Unit:    "s", Metal: statsOf(rto),
		Target: fmt.Sprintf("≤ L+M+%v = %v", failoverStart, bound+failoverStart),
		When:   time.Now(),
	}
	rtoRow.Met = rtoRow.Metal.Max <= (bound + failoverStart).Seconds()
	rtoRow.Note = fmt.Sprintf("promote succeeded after %s (min/median/max; allowed at most L+M = %v after the cut, plus its own run and %v polling)", fmtStats(statsOf(promoted), "s"), bound, failoverPoll)
	if !rtoRow.Met {
		rtoRow.Note = join("short of target", rtoRow.Note)
	}
	overlapRow := Result{
		Measure: fmt.Sprintf("failover overlap: primary's serve exit − promote success (%s)", setting),
		Unit:    "s", Metal: statsOf(overlap), Target: "≤ 0 s (worst: max)", When: time.Now(),
	}
	overlapRow.Met = overlapRow.Metal.Max <= 0
	overlapRow.Note = "the primary stops when its lease runs out, L after its last confirmed heartbeat; promote waits L + M after that heartbeat: about −M"
	if !overlapRow.Met {
		overlapRow.Note = join("SPLIT BRAIN: the primary served after the promote", overlapRow.Note)
	}
	return []Result{rtoRow, overlapRow}, nil
}

// failoverRun is one failover's times, from the cut.
type failoverRun struct{ stopped, promoted, serving time.Duration }

// possibleIn reads how long promote says it must still wait.
var possibleIn = regexp.MustCompile(`promote is possible in ([0-9.hmµns]+)`)

// failoverOnce is one failover in dir, with a backup directory of its own.
func failoverOnce(cfg *config, lab *netLab, d *sshdtest.Server, dir string) (failoverRun, error) {
	every, margin := cfg.failoverEvery, cfg.failoverMargin
	ctx, cancel := context.WithTimeout(cfg.ctx, 3*time.Minute+3*every+margin+every) // + a snapshot interval for the replica
	defer cancel()
	metal, err := filepath.Abs(cfg.metal)
	if err != nil {
		return failoverRun{}, err
	}
	sub := filepath.Base(dir)
	ssh := []string{"--known-hosts", d.KnownHosts, "-i", d.ClientKey}
	env := []string{"SSH_AUTH_SOCK="}
	instance := func(name string) (string, error) {
		sd := filepath.Join(dir, name)
		if err := os.MkdirAll(sd, 0o755); err != nil {
			return "", err
		}
		site := filepath.Join(sd, "site.hcl")
		return site, os.WriteFile(site, metalDHCPSite(sd, lab.serverIf, failoverMachine), 0o644)
	}
	// The primary backs up through 127.0.0.1 (the path cut), the standby
	// through failoverSecond.
	serve := func(name, site, target string) (*proc, error) {
		return startProc("metal serve ("+name+")", filepath.Join(dir, name+".log"), env, lab.in(lab.server, append([]string{metal, "serve",
			"--dhcp-rate-limit", "off", "--state-dir", filepath.Dir(site), "--tftp-addr", labServerIP + ":6969", "--api-listen", "127.0.0.1:0",
			// No install agent to build: DHCP is what is measured.
			"--agent-kernel", "http://" + labServerIP + ":8080/agent/vmlinuz",
			"--owner", "bench-" + name, "--backup-to", target, "--backup-every", every.String(), site}, ssh...)...)...)
	}
	standbyTarget := d.URLVia(failoverSecond, sub)
	verb := func(args ...string) (string, error) {
		argv := lab.in(lab.server, append(append([]string{metal}, args...), ssh...)...)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var conn net.PacketConn
	if err := inNetns(lab.client, func() error {
		conn, err = clientSocket(lab.clientIf)
		return err
	}); err != nil {
		return failoverRun{}, err
	}
	defer conn.Close()
	mac, err := net.ParseMAC(failoverMachine.mac)
	if err != nil {
		return failoverRun{}, err
	}
	answers := func(p *proc, giveUp time.Duration) error {
		for start := time.Now(); time.Since(start) < giveUp; {
			if err := p.exited(); err != nil {
				return err
			}
			if _, err := dora(ctx, conn, mac, 100*time.Millisecond, 100*time.Millisecond); err == nil {
				return nil
			} else if !errors.Is(err, errNoLease) {
				return err
			}
		}
		return fmt.Errorf("%s answers no DHCP within %v (log %s: %s)", p.name, giveUp, p.log, tail(p.log, 400))
	}

	primarySite, err := instance("a")
	if err != nil {
		return failoverRun{}, err
	}
	standbySite, err := instance("b")
	if err != nil {
		return failoverRun{}, err
	}
	primary, err := serve("a", primarySite, d.URL(sub))
	if err != nil {
		return failoverRun{}, err
	}
	defer primary.stop()
	if err := answers(primary, time.Minute); err != nil {
		return failoverRun{}, err
	}
	// The standby holds a replica, as after `metal standby`: one with the
	// site's machine (the primary records it once it serves).
	for {
		out, err := verb("standby", "--site", standbySite, "--from", standbyTarget, "--once")
		if err == nil {
			if n, err := machinesIn(ctx, filepath.Join(filepath.Dir(standbySite), "state.db")); err != nil {
				return failoverRun{}, err
			} else if n > 0 {
				break
			}
		}
		if ctx.Err() != nil {
			return failoverRun{}, fmt.Errorf("metal standby --once: %v: %s", err, out)
		}
		time.Sleep(max(failoverPoll, every/10))
	}

	// The cut: packets to the sshd's 127.0.0.1 and its answers from there
	// are dropped; the standby's path through failoverSecond stays.
	heal, err := netns.CutLoopbackTCP(ctx, lab.server, d.Port)
	if err != nil {
		return failoverRun{}, err
	}
	cut := time.Now()
	defer func() { _ = heal() }()
	stopped := make(chan time.Duration, 1)
	go func() { <-primary.done; stopped <- time.Since(cut) }()

	var r failoverRun
	for {
		out, err := verb("promote", "--site", standbySite, "--from", standbyTarget, "--owner", "bench-b", "--margin", margin.String())
		if err == nil {
			r.promoted = time.Since(cut)
			break
		}
		if !strings.Contains(out, "primary is alive") || ctx.Err() != nil {
			return failoverRun{}, fmt.Errorf("metal promote: %v: %s", err, out)
		}
		// Promote says how long it must still wait: sleep most of that,
		// then poll.
		wait := failoverPoll
		if m := possibleIn.FindStringSubmatch(out); m != nil {
			if w, err := time.ParseDuration(m[1]); err == nil && w > 2*failoverPoll {
				wait = w - failoverPoll
			}
		}
		time.Sleep(wait)
	}
	// A primary still serving now overlaps: wait for its end to say by
	// how much.
	select {
	case r.stopped = <-stopped:
	case <-time.After(3*every + time.Minute):
		return failoverRun{}, fmt.Errorf("the primary still serves %v after the promote (log %s: %s)", 3*every+time.Minute, primary.log, tail(primary.log, 400))
	}
	standby, err := serve("b", standbySite, standbyTarget)
	if err != nil {
		return failoverRun{}, err
	}
	defer standby.stop()
	if err := answers(standby, time.Minute); err != nil {
		return failoverRun{}, err
	}
	r.serving = time.Since(cut)
	return r, nil
}

// machinesIn counts the machines in the bbolt store at path.
func machinesIn(ctx context.Context, path string) (int, error) {
	s, err := backend.Open(ctx, "file://"+path, backend.Options{})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	ms, _, err := s.Machines(ctx)
	return len(ms), err
}
