// Command metal-bench runs metal's benchmarks and prints them as one table:
// metal's figure, the peer's figure (dnsmasq, tftpd-hpa, nginx, ...) measured
// on the same machine in the same run, their ratio, and the target. Runs of
// metal and its peer alternate and repeat; the ratio is of medians.
//
// It writes the same results as JSON under --out so runs can be compared.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one row of the table.
type Result struct {
	Measure string    `json:"measure"`
	Unit    string    `json:"unit"`
	Metal   Stats     `json:"metal"`
	Peer    string    `json:"peer,omitempty"`
	PeerVal *Stats    `json:"peer_value,omitempty"`
	Ratio   float64   `json:"ratio,omitempty"` // metal ÷ peer, of medians
	Target  string    `json:"target"`
	Met     bool      `json:"met"`
	Note    string    `json:"note,omitempty"`
	When    time.Time `json:"when"`
}

// Stats are min, median and max of repeated runs.
type Stats struct {
	Min, Median, Max float64
	Runs             int
}

func statsOf(xs []float64) Stats {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return Stats{Min: s[0], Median: s[len(s)/2], Max: s[len(s)-1], Runs: len(s)}
}

// bench is one measure; it returns rows (a measure may compare several peers).
type bench struct {
	name string
	run  func(cfg *config) ([]Result, error)
}

type config struct {
	metal  string // path of the metal binary
	runs   int
	work   string // scratch directory
	logger *slog.Logger
}

func main() {
	cfg := &config{}
	var out, only string
	flag.StringVar(&cfg.metal, "metal", "bin/metal", "metal binary to measure")
	flag.IntVar(&cfg.runs, "runs", 5, "repetitions of each measure (at least 3)")
	flag.StringVar(&out, "out", "bench-results", "directory for the JSON results")
	flag.StringVar(&only, "only", "", "run only measures whose name contains this")
	flag.Parse()
	cfg.runs = max(cfg.runs, 3)
	cfg.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	work, err := os.MkdirTemp("", "metal-bench-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(work)
	cfg.work = work

	var results []Result
	for _, b := range benches {
		if only != "" && !strings.Contains(b.name, only) {
			continue
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
	path := filepath.Join(out, "bench-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	data, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		fatal(err)
	}
	fmt.Printf("\nResults written to %s\n", path)
}

func printTable(w *os.File, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEASURE\tMETAL (min/median/max)\tPEER\tPEER (min/median/max)\tRATIO\tTARGET\tMET")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Measure, fmtStats(r.Metal, r.Unit), dash(r.Peer), peer, ratio, r.Target, met)
	}
	tw.Flush()
}

func fmtStats(s Stats, unit string) string {
	return fmt.Sprintf("%.3g/%.3g/%.3g %s", s.Min, s.Median, s.Max, unit)
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
