package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/etcdtest"
)

// The store benchmark's size: the 10,000 machines and 100,000
// events. The last storeTimed machines and events are written through the
// Store API, and timed; the rest are loaded in bulk with Restore first, as
// a snapshot of a busy site would bring them: writing them one by one
// (each durable: an fsync, a quorum) would time the same thing for
// minutes on a shared 2-core machine.
const (
	storeMachines = 10000
	storeEvents   = 100000
	storeTimed    = 2000
	storeWriters  = 16 // concurrent writers, as DHCP workers and agents are
)

// benchStore measures the inventory store on bbolt (a file in the scratch
// directory) and on etcd (Debian's etcd-server on loopback, started and
// killed by PID): writes/s, reads/s and memory with 10,000 machines and
// 100,000 events.
func benchStore(cfg *config) ([]Result, error) {
	runs := min(cfg.runs, 3) // each run builds a store from scratch
	history, err := storeHistory(cfg.ctx, storeMachines-storeTimed, storeEvents-storeTimed)
	if err != nil {
		return nil, err
	}
	var rows []Result
	for _, be := range []string{"bolt", "etcd"} {
		var all []storeRun
		for i := range runs {
			if err := cfg.ctx.Err(); err != nil {
				return rows, err
			}
			r, err := storeRunOn(cfg, be, i, history)
			if err != nil {
				return rows, fmt.Errorf("%s store: %w", be, err)
			}
			all = append(all, r)
		}
		rows = append(rows, storeRows(be, all)...)
	}
	return rows, nil
}

// storeRun is what one run measured.
type storeRun struct {
	machineWrites, eventWrites float64 // per second
	listMachines               float64 // machines read per second by Machines()
	getMachine                 float64 // Machine(name) per second
	readEvents                 float64 // events read per second, in pages of 1000
	heapMiB                    float64 // Go heap holding the 10k machines listed
	serverMiB                  float64 // bbolt file size, or etcd-server RSS
}

// storeHistory builds the bulk-loaded records once: machines and events
// written to an in-memory store and dumped.
func storeHistory(ctx context.Context, machines, events int) ([]inventory.Record, error) {
	mem, err := inventory.Open(ctx, inventory.NewMemoryKV(), inventory.Options{})
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	for i := range machines {
		if _, err := mem.PutMachine(ctx, benchMachine(i)); err != nil {
			return nil, err
		}
	}
	start := time.Now().Add(-30 * 24 * time.Hour)
	for i := range events {
		m := i % storeMachines
		e := inventory.Event{Time: start.Add(time.Duration(i) * 10 * time.Second), Machine: machineName(m), MAC: machineMAC(m),
			Kind: inventory.EventDHCPAck, Message: "lease 10.10." + strconv.Itoa(m/250) + "." + strconv.Itoa(m%250)}
		if _, err := mem.AppendEvent(ctx, e); err != nil {
			return nil, err
		}
	}
	var recs []inventory.Record
	_, err = mem.Dump(ctx, func(r inventory.Record) error {
		recs = append(recs, r)
		return nil
	})
	return recs, err
}

func benchMachine(i int) inventory.Machine {
	return inventory.Machine{Name: machineName(i), MAC: machineMAC(i), State: inventory.StateReady,
		Identity: inventory.Identity{Labels: map[string]string{"rack": fmt.Sprintf("r%02d", i/250)}}}
}

func machineName(i int) string { return fmt.Sprintf("node-%05d", i) }
func machineMAC(i int) string {
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))
}

// storeRunOn opens a fresh store of the backend, fills and measures it.
func storeRunOn(cfg *config, be string, run int, history []inventory.Record) (storeRun, error) {
	ctx := cfg.ctx
	dir := filepath.Join(cfg.work, fmt.Sprintf("store-%s-%d", be, run))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return storeRun{}, err
	}
	defer os.RemoveAll(dir)
	var url string
	var serverMiB func() float64
	switch be {
	case "bolt":
		path := filepath.Join(dir, "state.db")
		url = "file://" + path
		serverMiB = func() float64 {
			st, err := os.Stat(path)
			if err != nil {
				return 0
			}
			return float64(st.Size()) / (1 << 20)
		}
	case "etcd":
		c, err := etcdtest.Start(dir, 1)
		if err != nil {
			return storeRun{}, err
		}
		defer c.Close()
		url = c.StateURL("/metal-bench")
		serverMiB = func() float64 { return rssMiB(c.PID(0)) }
	}
	s, err := backend.Open(ctx, url, backend.Options{Logger: cfg.quiet, DialTimeout: 10 * time.Second})
	if err != nil {
		return storeRun{}, err
	}
	defer s.Close()
	if err := s.Restore(ctx, history, inventory.RestoreOptions{}); err != nil {
		return storeRun{}, fmt.Errorf("load %d events: %w", len(history), err)
	}

	var r storeRun
	secs, err := parallel(storeTimed, func(i int) error {
		_, err := s.PutMachine(ctx, benchMachine(storeMachines-storeTimed+i))
		return err
	})
	if err != nil {
		return r, fmt.Errorf("write machines: %w", err)
	}
	r.machineWrites = storeTimed / secs
	secs, err = parallel(storeTimed, func(i int) error {
		m := rand.IntN(storeMachines)
		_, err := s.AppendEvent(ctx, inventory.Event{Machine: machineName(m), MAC: machineMAC(m), Kind: inventory.EventScript, Message: "script served"})
		return err
	})
	if err != nil {
		return r, fmt.Errorf("append events: %w", err)
	}
	r.eventWrites = storeTimed / secs

	start := time.Now()
	ms, _, err := s.Machines(ctx)
	if err != nil {
		return r, err
	}
	r.listMachines = float64(len(ms)) / time.Since(start).Seconds()
	if len(ms) != storeMachines {
		return r, fmt.Errorf("listed %d machines, wrote %d", len(ms), storeMachines)
	}
	// The heap the list holds: the heap collected with it, minus the heap
	// collected without it. (Before and after the listing would also
	// count what the writes before still held, which they may let go of
	// in between.) Two collections for each reading: what a sync.Pool
	// holds (the writes' buffers) is freed only by the second collection
	// after its last use, and would otherwise count as the list's.
	var with, without runtime.MemStats
	collect := func(m *runtime.MemStats) {
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(m)
	}
	collect(&with)
	runtime.KeepAlive(ms)
	ms = nil
	collect(&without)
	r.heapMiB = float64(int64(with.HeapAlloc)-int64(without.HeapAlloc)) / (1 << 20)

	secs, err = parallel(storeMachines, func(int) error {
		_, err := s.Machine(ctx, machineName(rand.IntN(storeMachines)))
		return err
	})
	if err != nil {
		return r, fmt.Errorf("read machines: %w", err)
	}
	r.getMachine = storeMachines / secs

	start = time.Now()
	read, after0 := 0, int64(0)
	for {
		evs, err := s.Events(ctx, inventory.EventQuery{AfterSeq: after0, Limit: 1000})
		if err != nil {
			return r, err
		}
		if len(evs) == 0 {
			break
		}
		read += len(evs)
		after0 = evs[len(evs)-1].Seq
	}
	r.readEvents = float64(read) / time.Since(start).Seconds()
	if read != storeEvents {
		return r, fmt.Errorf("read %d events, wrote %d", read, storeEvents)
	}
	r.serverMiB = serverMiB()
	return r, nil
}

// parallel runs fn(0..n-1) on storeWriters goroutines and returns the
// seconds it took, or the first error.
func parallel(n int, fn func(i int) error) (float64, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	start := time.Now()
	for range storeWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return time.Since(start).Seconds(), first
}

// rssMiB is a process's resident memory, from /proc.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func storeRows(be string, runs []storeRun) []Result {
	col := func(f func(storeRun) float64) Stats {
		xs := make([]float64, len(runs))
		for i, r := range runs {
			xs[i] = f(r)
		}
		return statsOf(xs)
	}
	now := time.Now()
	p := "store " + be + " (10k machines, 100k events): "
	mw := col(func(r storeRun) float64 { return r.machineWrites })
	ew := col(func(r storeRun) float64 { return r.eventWrites })
	lm := col(func(r storeRun) float64 { return r.listMachines })
	gm := col(func(r storeRun) float64 { return r.getMachine })
	re := col(func(r storeRun) float64 { return r.readEvents })
	heap := col(func(r storeRun) float64 { return r.heapMiB })
	srv := col(func(r storeRun) float64 { return r.serverMiB })
	srvMeasure, srvNote := "bbolt file size", "the file holds every record; the OS caches it"
	if be == "etcd" {
		srvMeasure, srvNote = "etcd-server resident memory", "etcd keeps its whole keyspace in memory"
	}
	writers := fmt.Sprintf("%d concurrent writers", storeWriters)
	readers := fmt.Sprintf("%d concurrent readers", storeWriters)
	return []Result{
		{Measure: p + "machine writes", Unit: "/s", Metal: mw, Target: "≥ 500/s", Met: mw.Median >= 500, Note: writers + "; each write durable (fsync or quorum) before it returns", When: now},
		{Measure: p + "event appends", Unit: "/s", Metal: ew, Target: "≥ 200/s", Met: ew.Median >= 200, Note: writers + " on one sequence counter", When: now},
		{Measure: p + "list all machines", Unit: "/s", Metal: lm, Target: "10k in < 1 s", Met: lm.Median >= storeMachines, When: now},
		{Measure: p + "machine reads by name", Unit: "/s", Metal: gm, Target: "≥ 2,000/s", Met: gm.Median >= 2000, Note: readers, When: now},
		{Measure: p + "event reads, pages of 1000", Unit: "/s", Metal: re, Target: "100k in < 10 s", Met: re.Median >= storeEvents/10, When: now},
		{Measure: p + "Go heap of 10k listed machines", Unit: "MiB", Metal: heap, Target: "< 100 MiB", Met: heap.Median < 100, When: now},
		{Measure: p + srvMeasure, Unit: "MiB", Metal: srv, Target: "< 1 GiB", Met: srv.Median < 1024, Note: srvNote, When: now},
	}
}
