package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/virtual"
)

// bmcFleetSize is how many virtual BMC endpoints the BMC benchmark polls.
const bmcFleetSize = 500

// benchBMCStatus times `bmc status` (bmc.RunFleet with OpStatus, through
// bmclib's Redfish provider) over 500 virtual-BMC endpoints, each its own
// HTTP listener on a loopback port, at two concurrency limits. The machines
// behind the BMCs are in memory: what is measured is the Redfish path
// (sessions, HTTP, JSON) under load, not QEMU.
func benchBMCStatus(cfg *config) ([]Result, error) {
	const user, pass = "admin", "bench-not-secret"
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	var serving sync.WaitGroup
	// Deferred in this order so the servers are told to stop before they
	// are waited for.
	defer serving.Wait()
	defer cancel()
	addrs := make([]string, bmcFleetSize)
	for i := range addrs {
		name := "bm-" + strconv.Itoa(i)
		srv, err := virtual.NewServer(virtual.Options{Username: user, Password: pass, Log: quiet},
			virtual.MachineSpec{Name: name, Machine: &memMachine{power: virtual.PowerOff}, Manufacturer: "bench"})
		if err != nil {
			return nil, fmt.Errorf("virtual bmc %s: %w", name, err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listener %d of %d (check ulimit -n): %w", i+1, bmcFleetSize, err)
		}
		addrs[i] = "http://" + ln.Addr().String()
		serving.Add(1)
		go func() {
			defer serving.Done()
			if err := srv.Serve(ctx, ln, nil); err != nil {
				cfg.logger.Error("virtual bmc stopped", "machine", name, "err", err)
			}
		}()
	}

	var rows []Result
	for _, conc := range []int{16, 64} {
		var secs, rates []float64
		for range cfg.runs {
			// Fresh clients each run, as each `metal bmc status` has.
			targets := make([]bmc.Target, len(addrs))
			for i, a := range addrs {
				name := "bm-" + strconv.Itoa(i)
				c, err := bmc.New(bmc.Config{Machine: name, Protocol: bmc.ProtocolRedfish, Address: a,
					Username: user, Password: pass, Timeout: 10 * time.Second}, quiet)
				if err != nil {
					return nil, err
				}
				targets[i] = bmc.Target{Name: name, Driver: c}
			}
			start := time.Now()
			results := bmc.RunFleet(ctx, targets, bmc.FleetOptions{Concurrency: conc}, bmc.OpStatus)
			elapsed := time.Since(start).Seconds()
			if err := bmc.FleetError(results); err != nil {
				return nil, fmt.Errorf("concurrency %d: %w", conc, err)
			}
			for _, r := range results {
				if r.Power != bmc.PowerOff {
					return nil, fmt.Errorf("machine %s: power %q, want off", r.Machine, r.Power)
				}
			}
			secs = append(secs, elapsed)
			rates = append(rates, float64(len(targets))/elapsed)
		}
		t, r := statsOf(secs), statsOf(rates)
		measure := fmt.Sprintf("bmc status %d virtual BMCs, concurrency %d", bmcFleetSize, conc)
		rows = append(rows,
			Result{Measure: measure + ": time", Unit: "s", Metal: t, Target: "500 machines < 30 s", Met: t.Median < 30, When: time.Now()},
			Result{Measure: measure + ": rate", Unit: "machines/s", Metal: r, Target: "> 17 machines/s", Met: r.Median > 500.0/30, When: time.Now()},
		)
	}
	return rows, nil
}

// memMachine is a virtual.Machine that only remembers its state: enough for
// the BMC benchmark, which measures the Redfish service and client.
type memMachine struct {
	mu    sync.Mutex
	power virtual.Power
	boot  virtual.Boot
}

func (m *memMachine) PowerState(context.Context) (virtual.Power, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.power, nil
}

func (m *memMachine) PowerOn(context.Context) error { return m.set(virtual.PowerOn) }

func (m *memMachine) PowerOff(context.Context, bool) error { return m.set(virtual.PowerOff) }

func (m *memMachine) Reset(context.Context) error { return m.set(virtual.PowerOn) }

func (m *memMachine) SetBootDevice(_ context.Context, b virtual.Boot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.boot = b
	return nil
}

func (m *memMachine) InsertMedia(context.Context, string) error { return nil }

func (m *memMachine) EjectMedia(context.Context) error { return nil }

func (m *memMachine) set(p virtual.Power) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.power = p
	return nil
}
