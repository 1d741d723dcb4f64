package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/site"
)

// applyFleetSize is how many simulated machines the apply benchmark
// provisions.
const applyFleetSize = 1000

// benchApply times the converge engine provisioning 1,000 simulated
// machines: each behind its own virtual Redfish BMC on a loopback port,
// driven through the real bmc client, with an install agent that reports
// done at once over the real agent protocol. The rollout is a canary, then
// batches of 10% by rack with no stagger, so what is measured is the
// engine and the BMC and agent paths, not waiting. It runs twice: on the
// in-memory store (the engine alone) and on an embedded bbolt file in the
// scratch directory, the default a user runs, where every write is synced
// to disk before it returns (concurrent writes share a commit). Peak
// goroutines and heap are sampled during the run.
func benchApply(cfg *config) ([]Result, error) {
	var rows []Result
	for _, be := range []struct{ name, measure string }{
		{"memory", "memory store"},
		{"bolt", "bbolt store on disk"},
	} {
		var secs, gor, heap []float64
		// Each run provisions the whole fleet; on disk three runs are
		// enough to see the spread.
		runs := cfg.runs
		if be.name == "bolt" {
			runs = min(runs, 3)
		}
		for run := range runs {
			s, g, h, err := applyOnce(cfg, be.name, run)
			if err != nil {
				return rows, fmt.Errorf("%s store: %w", be.name, err)
			}
			secs, gor, heap = append(secs, s), append(gor, g), append(heap, h)
		}
		t, g, h := statsOf(secs), statsOf(gor), statsOf(heap)
		measure := fmt.Sprintf("apply %d simulated machines (instant agents, %s)", applyFleetSize, be.measure)
		rows = append(rows,
			Result{Measure: measure + ": time", Unit: "s", Metal: t, Target: "< 60 s", Met: t.Median < 60, When: time.Now()},
			Result{Measure: measure + ": peak goroutines", Unit: "goroutines", Metal: g, Target: "—", Met: true, When: time.Now(),
				Note: "includes the simulated BMCs' and agents' servers"},
			Result{Measure: measure + ": peak heap", Unit: "MiB", Metal: h, Target: "< 500 MiB", Met: h.Median < 500, When: time.Now(),
				Note: "includes the simulated BMCs' and agents' servers"})
	}
	return rows, nil
}

// applyOnce provisions a fresh fleet into a fresh store and returns the
// wall time, peak goroutines and peak heap (MiB).
func applyOnce(cfg *config, be string, run int) (secs, goroutines, heapMiB float64, err error) {
	ctx, cancel := context.WithCancel(cfg.ctx)
	defer cancel()
	dir := filepath.Join(cfg.work, fmt.Sprintf("apply-%s-%d", be, run))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, 0, err
	}
	defer os.RemoveAll(dir)
	state := "file://" + filepath.Join(dir, "state.db")
	url := state
	if be == "memory" {
		url = "memory://"
	}
	store, err := backend.Open(ctx, url, backend.Options{Logger: cfg.quiet})
	if err != nil {
		return 0, 0, 0, err
	}
	defer store.Close()
	fleet, err := applytest.Start(applytest.Options{Machines: applyFleetSize, Racks: 10, Store: store, Logger: cfg.quiet})
	if err != nil {
		return 0, 0, 0, err
	}
	defer fleet.Close()
	res, diags := site.Load("bench.hcl", fleet.SiteHCL(state,
		"  canary = 1\n  batch_size = \"10%\"\n  by = \"rack\"\n  stagger = \"0s\"\n  max_failures = 0"), site.Options{})
	if diags.HasErrors() {
		return 0, 0, 0, fmt.Errorf("bench site: %s", diags.Error())
	}
	engine := apply.New(res.Site, store, apply.Options{
		AgentBoot: apply.AgentBoot{Kernel: "/files/agent/vmlinuz", Initrds: []string{"/files/agent/initrd.img"}},
		ImageURL:  func(image string) string { return "http://127.0.0.1/images/" + image },
		ReadyURL:  fleet.ReadyURL,
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
	cfg.logger.Info("apply bench run", "store", be, "run", run, "seconds", elapsed, "peak_goroutines", peakG, "peak_heap_mib", peakHeap>>20)
	return elapsed, float64(peakG), float64(peakHeap) / (1 << 20), nil
}
