// Command metal-bench runs metal's benchmarks and prints them as one table:
// metal's figure, the peer's figure (dnsmasq, tftpd-hpa, nginx, ...) measured
// on the same machine in the same run, their ratio, and the target. Runs of
// metal and its peer alternate and repeat; the ratio is of medians.
//
// It writes the same results as JSON under --out so runs can be compared.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Result is one row of the table.
type Result struct {
	Measure string  `json:"measure"`
	Unit    string  `json:"unit"`
	Metal   Stats   `json:"metal"`
	Peer    string  `json:"peer,omitempty"`
	PeerVal *Stats  `json:"peer_value,omitempty"`
	Ratio   float64 `json:"ratio,omitempty"` // metal ÷ peer, of medians
	Target  string  `json:"target"`
	Met     bool    `json:"met"`
	Note    string  `json:"note,omitempty"`
	// Limit, when known, is what the hardware does alone in the row's
	// unit, the most metal could reach (the slower of the disk and the
	// hash for a verified write, a loopback sendfile for an HTTP
	// download): the table prints metal's median as a percentage of it.
	Limit *Limit    `json:"limit,omitempty"`
	When  time.Time `json:"when"`
}

// Limit is a row's physical ceiling and how it was measured.
type Limit struct {
	What  string `json:"what"`
	Value Stats  `json:"value"`
}

// pctOfLimit is metal's median as a percentage of the limit's median.
func (r Result) pctOfLimit() string {
	if r.Limit == nil || r.Limit.Value.Median <= 0 || r.Metal.Runs == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*r.Metal.Median/r.Limit.Value.Median, 'f', 0, 64) + "%"
}

// Stats are min, median and max of repeated runs.
type Stats struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
	Runs   int     `json:"runs"`
}

// statsOf summarises runs; the median of an even count is the mean of the
// middle two. No runs is the zero Stats.
func statsOf(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Stats{Min: s[0], Median: med, Max: s[n-1], Runs: n}
}

// compare is a row of metal beside one peer, where more is better: the
// ratio is of medians and the target is the least ratio that meets it.
func compare(measure, unit string, metal Stats, peer string, peerVal Stats, target float64) Result {
	r := Result{Measure: measure + " vs " + peer, Unit: unit, Metal: metal, Peer: peer, PeerVal: &peerVal,
		Target: fmt.Sprintf("≥ %.1f×", target), When: time.Now()}
	if peerVal.Median > 0 {
		r.Ratio = metal.Median / peerVal.Median
		r.Met = r.Ratio >= target
	}
	if !r.Met {
		r.Note = "short of target"
	}
	return r
}

// ofLimit judges r by its limit instead of its peer: met when metal's
// median is at least frac of the limit's. It is for a peer that does less
// than metal (dd does not verify what it writes), why says so in the note:
// the ratio still tells how far apart they are, the limit how close metal
// comes to what the hardware allows.
func ofLimit(r Result, frac float64, why string) Result {
	r.Target = fmt.Sprintf("≥ %.0f%% of limit", 100*frac)
	r.Met = r.Limit != nil && r.Limit.Value.Median > 0 && r.Metal.Median >= frac*r.Limit.Value.Median
	r.Note = why
	if !r.Met {
		r.Note = "short of target; " + why
	}
	return r
}

// compareLower is compare where less is better (a time): the ratio is
// still metal ÷ peer, of medians, and the target the most it may be.
func compareLower(measure, unit string, metal Stats, peer string, peerVal Stats, target float64) Result {
	r := Result{Measure: measure + " vs " + peer, Unit: unit, Metal: metal, Peer: peer, PeerVal: &peerVal,
		Target: fmt.Sprintf("≤ %.1f×", target), When: time.Now()}
	if peerVal.Median > 0 {
		r.Ratio = metal.Median / peerVal.Median
		r.Met = r.Ratio <= target
	}
	if !r.Met {
		r.Note = "short of target"
	}
	return r
}

// bench is one measure; it returns rows (a measure may compare several peers).
type bench struct {
	name string
	run  func(cfg *config) ([]Result, error)
}

type config struct {
	// ctx ends on ^C or SIGTERM: measures then stop their load and their
	// servers, and remove what they created, before the table is printed.
	ctx    context.Context
	metal  string // path of the metal binary
	runs   int
	work   string // scratch directory
	logger *slog.Logger
	quiet  *slog.Logger // for servers run in-process: their logs are noise here
	// failoverEvery and failoverMargin are the failover row's heartbeat
	// interval and clock-skew margin M (see benchFailover).
	failoverEvery, failoverMargin time.Duration
	// stormMachines is the boot storm's rack size (see benchStorm).
	stormMachines int
}

func main() {
	if os.Getenv(stormClientEnv) == "1" {
		stormClientMain()
		return
	}
	cfg := &config{}
	var out, only, readme string
	flag.StringVar(&cfg.metal, "metal", "bin/metal", "metal binary to measure")
	flag.IntVar(&cfg.runs, "runs", 5, "repetitions of each measure (at least 3)")
	flag.StringVar(&out, "out", "bench-results", "directory for the results (JSON and markdown)")
	flag.StringVar(&only, "only", "", "run only measures whose name contains this")
	flag.StringVar(&readme, "readme", "", "after a run of every measure, put its markdown table between this file's benchmark markers")
	flag.DurationVar(&cfg.failoverEvery, "failover-every", time.Second, "the failover row's heartbeat interval (metal serve --backup-every; its default 5m makes a run last up to 16 minutes, and the row then runs once)")
	flag.DurationVar(&cfg.failoverMargin, "failover-margin", time.Second, "the failover row's clock-skew margin (metal promote --margin; its default is 60s)")
	flag.IntVar(&cfg.stormMachines, "storm-machines", stormMachines, fmt.Sprintf("the boot storm's machines, 1 to %d (one documentation /24); a few, spread over its second, time one machine's boot on an idle server", maxStormMachines))
	settle := flag.Duration("settle", 2*time.Minute, "before the first measure, wait up to this long for the host's CPUs to be idle (0: start at once)")
	flag.Parse()
	cfg.runs = max(cfg.runs, 3)
	if cfg.stormMachines < 1 || cfg.stormMachines > maxStormMachines {
		fatal(fmt.Errorf("--storm-machines %d: give 1 to %d", cfg.stormMachines, maxStormMachines))
	}
	if _, err := os.Stat(cfg.metal); err != nil {
		fatal(fmt.Errorf("metal binary %s: %w (build it with `make build`, or name it with --metal)", cfg.metal, err))
	}
	cfg.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg.quiet = slog.New(slog.DiscardHandler)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.ctx = ctx

	work, err := os.MkdirTemp("", "metal-bench-")
	if err != nil {
		fatal(err)
	}
	// METAL_BENCH_KEEP=1 keeps the servers' logs and sites to read why a
	// measure failed.
	defer func() {
		if os.Getenv("METAL_BENCH_KEEP") == "" {
			os.RemoveAll(work)
		}
	}()
	// Peers drop root for unprivileged users (nginx's workers run as
	// nobody) and must still read the files served from here.
	if err := os.Chmod(work, 0o755); err != nil {
		fatal(err)
	}
	cfg.work = work

	if err := waitQuiet(ctx, cfg.logger, *settle); err != nil {
		fatal(err)
	}
	var results []Result
	for _, b := range benches {
		if only != "" && !strings.Contains(b.name, only) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		cfg.logger.Info("running", "measure", b.name, "runs", cfg.runs)
		rows, err := b.run(cfg)
		if err != nil {
			cfg.logger.Error("measure failed", "measure", b.name, "err", err)
			results = append(results, Result{Measure: b.name, Note: "FAILED: " + err.Error(), When: time.Now()})
			continue
		}
		results = append(results, rows...)
	}
	printTable(os.Stdout, results)
	if err := os.MkdirAll(out, 0o755); err != nil {
		fatal(err)
	}
	now := time.Now()
	base := filepath.Join(out, "bench-"+now.UTC().Format("20060102T150405Z"))
	data, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(base+".json", data, 0o644); err != nil {
		fatal(err)
	}
	var md bytes.Buffer
	writeMarkdown(&md, thisHost(now), cfg.runs, results)
	if err := os.WriteFile(base+".md", md.Bytes(), 0o644); err != nil {
		fatal(err)
	}
	// latest.md is always the last run, whatever it measured.
	if err := os.WriteFile(filepath.Join(out, "latest.md"), md.Bytes(), 0o644); err != nil {
		fatal(err)
	}
	fmt.Printf("\nResults written to %s.json and %[1]s.md\n", base)
	if readme == "" {
		return
	}
	// The README shows a whole run only: a table of some measures would
	// drop the others' rows.
	if only != "" || ctx.Err() != nil {
		fmt.Printf("%s not updated: this run did not measure everything\n", readme)
		return
	}
	old, err := os.ReadFile(readme)
	if err != nil {
		fatal(err)
	}
	updated, err := replaceBetweenMarkers(old, md.Bytes())
	if err != nil {
		fatal(fmt.Errorf("%s: %w", readme, err))
	}
	if err := os.WriteFile(readme, updated, 0o644); err != nil {
		fatal(err)
	}
	fmt.Printf("%s: its benchmark table is now this run's\n", readme)
}

func printTable(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEASURE\tMETAL (min/median/max)\tPEER\tPEER (min/median/max)\tRATIO\tOF LIMIT\tTARGET\tMET")
	for _, r := range results {
		if r.Metal.Runs == 0 {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\n", r.Measure, r.Note)
			continue
		}
		peer, ratio := "-", "-"
		if r.PeerVal != nil {
			peer = fmtStats(*r.PeerVal, r.Unit)
			ratio = fmt.Sprintf("%.2f×", r.Ratio)
		}
		met := "yes"
		if !r.Met {
			met = "NO"
		}
		if r.Note != "" {
			met += " (" + r.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Measure, fmtStats(r.Metal, r.Unit), dash(r.Peer), peer, ratio, r.pctOfLimit(), r.Target, met)
	}
	tw.Flush()
}

func fmtStats(s Stats, unit string) string {
	return num(s.Min) + "/" + num(s.Median) + "/" + num(s.Max) + " " + unit
}

// num prints a figure with about three significant digits and no
// exponent: 2118, 30.4, 0.512.
func num(x float64) string {
	switch ax := math.Abs(x); {
	case ax >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case ax >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'g', 3, 64)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "metal-bench:", err)
	os.Exit(1)
}
