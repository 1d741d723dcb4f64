package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// waitQuiet holds the first measure back until the host is quiet: its
// dirty pages written out and its CPUs nearly idle for quietSamples
// seconds in a row, or until limit has passed (0: do not wait). A bench
// started right after `make test` otherwise measured the tests' tail: the
// first measure (validate+plan of 10,000 machines, a time with a target)
// read 1.25 s in a run begun 15 s after the tests ended, and 0.82 s when
// run again minutes later, the binary the same.
func waitQuiet(ctx context.Context, log *slog.Logger, limit time.Duration) error {
	if limit <= 0 {
		return nil
	}
	// What the last job wrote would otherwise be written back while the
	// first measure runs.
	unix.Sync()
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return fmt.Errorf("quiet host: %w", err)
	}
	cpuTotal := func() (procfs.CPUStat, error) {
		st, err := fs.Stat()
		return st.CPUTotal, err
	}
	start := time.Now()
	prev, err := cpuTotal()
	if err != nil {
		return fmt.Errorf("quiet host: %w", err)
	}
	quiet, warned := 0, false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for quiet < quietSamples {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		cur, err := cpuTotal()
		if err != nil {
			return fmt.Errorf("quiet host: %w", err)
		}
		b := busy(prev, cur)
		prev = cur
		if b <= quietBusy {
			quiet++
			continue
		}
		quiet = 0
		switch waited := time.Since(start); {
		case waited >= limit:
			log.Warn("the host stayed busy; measuring anyway, so the figures will be noisier", "busy", pct(b),
				"waited", waited.Round(time.Second))
			return nil
		case !warned:
			log.Info("waiting for the host to be quiet before measuring", "busy", pct(b), "up_to", limit)
			warned = true
		}
	}
	if warned {
		log.Info("the host is quiet", "waited", time.Since(start).Round(time.Second))
	}
	return nil
}

// quietBusy is the most of the host's CPU time, over a second, that other
// work may take while the host counts as quiet; quietSamples such seconds
// in a row make it so.
const (
	quietBusy    = 0.10
	quietSamples = 3
)

// busy is the share of the CPU time between two readings of /proc/stat
// that was not idle: waiting for I/O counts as idle (no CPU was taken),
// time the hypervisor gave to others (steal) as busy (the host's CPUs
// were not there for a measure).
func busy(a, b procfs.CPUStat) float64 {
	idle := (b.Idle - a.Idle) + (b.Iowait - a.Iowait)
	total := idle + (b.User - a.User) + (b.Nice - a.Nice) + (b.System - a.System) + (b.IRQ - a.IRQ) +
		(b.SoftIRQ - a.SoftIRQ) + (b.Steal - a.Steal)
	if total <= 0 {
		return 0
	}
	return min(1, max(0, 1-idle/total))
}

func pct(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) }
