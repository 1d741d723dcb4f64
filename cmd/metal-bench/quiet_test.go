package main

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

func TestBusy(t *testing.T) {
	base := procfs.CPUStat{User: 100, System: 50, Idle: 1000, Iowait: 10, Steal: 5}
	add := func(d procfs.CPUStat) procfs.CPUStat {
		return procfs.CPUStat{User: base.User + d.User, Nice: base.Nice + d.Nice, System: base.System + d.System,
			Idle: base.Idle + d.Idle, Iowait: base.Iowait + d.Iowait, IRQ: base.IRQ + d.IRQ,
			SoftIRQ: base.SoftIRQ + d.SoftIRQ, Steal: base.Steal + d.Steal}
	}
	for _, tc := range []struct {
		name string
		d    procfs.CPUStat
		want float64
	}{
		{"idle", procfs.CPUStat{Idle: 2}, 0},
		{"one of two CPUs busy", procfs.CPUStat{User: 0.5, System: 0.5, Idle: 1}, 0.5},
		{"waiting for the disk is idle", procfs.CPUStat{Iowait: 1.5, User: 0.5}, 0.25},
		{"the hypervisor's other guests are busy", procfs.CPUStat{Steal: 1, Idle: 1}, 0.5},
		{"interrupts count", procfs.CPUStat{IRQ: 0.1, SoftIRQ: 0.1, Idle: 1.8}, 0.1},
		{"no time passed", procfs.CPUStat{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := busy(base, add(tc.d)); got < tc.want-1e-9 || got > tc.want+1e-9 {
				t.Errorf("busy = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWaitQuiet runs waitQuiet against this host's /proc/stat. The busy
// case keeps every CPU the process may use spinning; whether the
// host is quiet otherwise cannot be known in a test (other packages' tests
// run beside it), so the quiet case is not asserted.
func TestWaitQuiet(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx := context.Background()

	start := time.Now()
	if err := waitQuiet(ctx, log, 0); err != nil || time.Since(start) > time.Second {
		t.Fatalf("limit 0: %v after %v, want nil at once", err, time.Since(start))
	}

	// The spinning goroutines must make the whole host busy, which a
	// process held to a few of many CPUs (a cgroup quota, an affinity
	// mask) cannot.
	st, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	stat, err := st.Stat()
	if err != nil {
		t.Fatal(err)
	}
	spin := min(runtime.GOMAXPROCS(0), runtime.NumCPU())
	if share := float64(spin) / float64(max(1, len(stat.CPU))); share < 2*quietBusy {
		t.Skipf("this process can keep %d of the host's %d CPUs busy (%s), too few to make the host busy", spin, len(stat.CPU), pct(share))
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range spin {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
			}
		}()
	}
	const limit = 2 * time.Second
	start = time.Now()
	err = waitQuiet(ctx, log, limit)
	waited := time.Since(start)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatalf("busy host: %v", err)
	}
	if waited < limit {
		t.Errorf("busy host: returned after %v, before the limit %v", waited, limit)
	}
	for _, want := range []string{"waiting for the host to be quiet", "the host stayed busy"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := waitQuiet(cctx, log, time.Minute); err != context.Canceled {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
}
