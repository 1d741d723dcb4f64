package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/site"
	"github.com/metal-dev/metal/site/apply"
	"github.com/metal-dev/metal/site/apply/applytest"
)

// applyFleetSize is how many simulated machines the apply benchmark
// provisions.
const applyFleetSize = 1000

// benchApply times the converge engine provisioning 1,000 simulated
// machines: each behind its own virtual Redfish BMC on a loopback port,
// driven through the real bmc client, with an install agent that reports
// done at once over the real agent protocol. The rollout is a canary, then
// batches of 10% by rack with no stagger, so what is measured is the
// engine and the BMC and agent paths, not waiting. The store is in memory:
// on an embedded bbolt store every write is a synced transaction (about
// 15 ms on this machine's disk), and the ten or so writes each machine
// needs would make the row a measure of the disk. Peak goroutines and heap
// are sampled during the run.
func benchApply(cfg *config) ([]Result, error) {
	var secs, gor, heap []float64
	for run := range cfg.runs {
		s, g, h, err := applyOnce(cfg, run)
		if err != nil {
			return nil, err
		}
		secs, gor, heap = append(secs, s), append(gor, g), append(heap, h)
	}
	t, g, h := statsOf(secs), statsOf(gor), statsOf(heap)
	measure := fmt.Sprintf("apply %d simulated machines (instant agents, memory store)", applyFleetSize)
	return []Result{
		{Measure: measure + ": time", Unit: "s", Metal: t, Target: "< 60 s", Met: t.Median < 60, When: time.Now()},
		{Measure: measure + ": peak goroutines", Unit: "goroutines", Metal: g, Target: "—", Met: true, When: time.Now(),
			Note: "includes the simulated BMCs' and agents' servers"},
		{Measure: measure + ": peak heap", Unit: "MiB", Metal: h, Target: "< 500 MiB", Met: h.Median < 500, When: time.Now(),
			Note: "includes the simulated BMCs' and agents' servers"},
	}, nil
}

// applyOnce provisions a fresh fleet into a fresh store and returns the
// wall time, peak goroutines and peak heap (MiB).
func applyOnce(cfg *config, run int) (secs, goroutines, heapMiB float64, err error) {
	ctx, cancel := context.WithCancel(cfg.ctx)
	defer cancel()
	dir := filepath.Join(cfg.work, fmt.Sprintf("apply-%d", run))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, 0, err
	}
	defer os.RemoveAll(dir)
	store, err := backend.Open(ctx, "memory://", backend.Options{Logger: cfg.quiet})
	if err != nil {
		return 0, 0, 0, err
	}
	defer store.Close()
	fleet, err := applytest.Start(applytest.Options{Machines: applyFleetSize, Racks: 10, Store: store, Logger: cfg.quiet})
	if err != nil {
		return 0, 0, 0, err
	}
	defer fleet.Close()
	res, diags := site.Load("bench.hcl", fleet.SiteHCL("file://"+filepath.Join(dir, "state.db"),
		"  canary = 1\n  batch_size = \"10%\"\n  by = \"rack\"\n  stagger = \"0s\"\n  max_failures = 0"), site.Options{})
	if diags.HasErrors() {
		return 0, 0, 0, fmt.Errorf("bench site: %s", diags.Error())
	}
	engine := apply.New(res.Site, store, apply.Options{
		AgentBoot: apply.AgentBoot{Kernel: "/files/agent/vmlinuz", Initrds: []string{"/files/agent/initrd.img"}},
		ImageURL:  func(image string) string { return "http://127.0.0.1/images/" + image },
		BMC:       apply.DriverBMCs(cfg.quiet, nil),
		Logger:    cfg.quiet, PollInterval: time.Second,
	})

	var peakG int
	var peakHeap uint64
	stop := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			peakG = max(peakG, runtime.NumGoroutine())
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	p, err := apply.Plan(ctx, store, res.Site)
	var result apply.Result
	if err == nil {
		result, err = engine.Apply(ctx, p)
	}
	elapsed := time.Since(start).Seconds()
	close(stop)
	sampled.Wait()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := result.Err(); err != nil {
		return 0, 0, 0, err
	}
	for name, n := range fleet.Installs() {
		if n != 1 {
			return 0, 0, 0, fmt.Errorf("machine %s installed %d times", name, n)
		}
	}
	if len(fleet.Installs()) != applyFleetSize {
		return 0, 0, 0, fmt.Errorf("%d of %d machines installed", len(fleet.Installs()), applyFleetSize)
	}
	cfg.logger.Info("apply bench run", "run", run, "seconds", elapsed, "peak_goroutines", peakG, "peak_heap_mib", peakHeap>>20)
	return elapsed, float64(peakG), float64(peakHeap) / (1 << 20), nil
}
