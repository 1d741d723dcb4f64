package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/metal-dev/metal/site"
)

var benches = []bench{
	{name: "validate+plan 10,000 machines", run: benchPlan},
	{name: "bmc status of 500 virtual BMCs", run: benchBMCStatus},
	{name: "apply of 1,000 simulated machines", run: benchApply},
	{name: "dhcp", run: benchDHCP},
	{name: "dhcp flood", run: benchFlood},
	{name: "tftp", run: benchTFTP},
	{name: "http", run: benchHTTP},
	{name: "boot storm", run: benchStorm},
	{name: "store", run: benchStore},
	{name: "image write", run: benchImageWrite}, {name: "image fetch", run: benchImageFetch},
	{name: "wipe", run: benchWipe},
	{name: "failover", run: benchFailover},
}

// benchPlan times `metal plan --json` of a generated 10,000-machine site as
// a whole process, and reads its peak memory from the kernel (ru_maxrss).
func benchPlan(cfg *config) ([]Result, error) {
	path := filepath.Join(cfg.work, "site-10k.hcl")
	if err := os.WriteFile(path, site.GenerateSite(40, 250), 0o644); err != nil {
		return nil, err
	}
	var secs, mib []float64
	for range cfg.runs {
		cmd := exec.Command(cfg.metal, "plan", "--json", path)
		cmd.Stdout, cmd.Stderr = nil, os.Stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("metal plan: %w", err)
		}
		secs = append(secs, time.Since(start).Seconds())
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		mib = append(mib, float64(ru.Maxrss)/1024) // Maxrss is in KiB
	}
	t, m := statsOf(secs), statsOf(mib)
	return []Result{
		{Measure: "validate+plan 10k machines: time", Unit: "s", Metal: t, Target: "< 1 s", Met: t.Median < 1, When: time.Now()},
		{Measure: "validate+plan 10k machines: peak memory", Unit: "MiB", Metal: m, Target: "< 300 MB", Met: m.Median*1.048576 < 300, When: time.Now()},
	}, nil
}
