package bmc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Target is one machine of a fleet operation.
type Target struct {
	Name   string
	Driver Driver
}

// Result is the outcome of a fleet operation on one machine. It marshals to
// the JSON metal prints with --json; it never carries credentials.
type Result struct {
	Machine  string `json:"machine"`
	Address  string `json:"bmc,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	Provider string `json:"provider,omitempty"`
	// Auth is the Redfish authentication used: "session" or "basic".
	Auth string `json:"auth,omitempty"`
	// AuthReason says why metal chose Basic auth, when it did.
	AuthReason string        `json:"auth_reason,omitempty"`
	Power      Power         `json:"power,omitempty"`
	Inventory  *Inventory    `json:"inventory,omitempty"`
	Err        error         `json:"-"`
	Error      string        `json:"error,omitempty"`
	Duration   time.Duration `json:"duration_ns"`
}

// Op is an operation run on each machine; it fills in r (Power,
// Inventory) and returns what failed.
type Op func(ctx context.Context, d Driver, r *Result) error

// FleetOptions tune RunFleet.
type FleetOptions struct {
	// Concurrency is how many machines are worked on at once (default 16).
	Concurrency int
	// MachineTimeout bounds the whole operation on one machine, retries and
	// power polling included (default: none beyond each call's own).
	MachineTimeout time.Duration
}

// describer is implemented by *Client; fakes in tests may implement it too.
type describer interface {
	Address() string
	Protocol() string
	Provider() string
}

// authDescriber is implemented by *Client.
type authDescriber interface {
	Auth() string
	AuthReason() string
}

// RunFleet runs op on every target, at most opts.Concurrency at a time, and
// returns one Result per target in the targets' order. A machine that
// fails, hangs or is slow affects only its own Result; cancelling ctx ends
// the waiting for all.
func RunFleet(ctx context.Context, targets []Target, opts FleetOptions, op Op) []Result {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	results := make([]Result, len(targets))
	sem := make(chan struct{}, opts.Concurrency)
	var wg sync.WaitGroup
	for i, t := range targets {
		results[i].Machine = t.Name
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i].Err = fmt.Errorf("machine %s: not started: %w", t.Name, ctx.Err())
			results[i].Error = results[i].Err.Error()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = runOne(ctx, t, opts.MachineTimeout, op)
		}()
	}
	wg.Wait()
	return results
}

func runOne(ctx context.Context, t Target, timeout time.Duration, op Op) Result {
	start := time.Now()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	r := Result{Machine: t.Name}
	// The op runs on its own goroutine and on a copy of r, so a driver that
	// ignores its context cannot hold up the fleet or race with the result.
	type outcome struct {
		r   Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		local := r
		defer func() {
			if p := recover(); p != nil {
				done <- outcome{local, fmt.Errorf("machine %s: driver panicked: %v", t.Name, p)}
			}
		}()
		err := op(ctx, t.Driver, &local)
		done <- outcome{local, err}
	}()
	var err error
	select {
	case o := <-done:
		r, err = o.r, o.err
	case <-ctx.Done():
		err = fmt.Errorf("machine %s: gave up waiting for the BMC: %w", t.Name, ctx.Err())
	}
	if d, ok := t.Driver.(describer); ok {
		r.Address, r.Protocol, r.Provider = d.Address(), d.Protocol(), d.Provider()
	}
	if d, ok := t.Driver.(authDescriber); ok {
		r.Auth, r.AuthReason = d.Auth(), d.AuthReason()
	}
	r.Machine = t.Name
	r.Duration = time.Since(start)
	if err != nil {
		r.Err = err
		r.Error = err.Error()
	}
	return r
}

// OpStatus reads the power state.
func OpStatus(ctx context.Context, d Driver, r *Result) error {
	p, err := d.PowerState(ctx)
	r.Power = p
	return err
}

// OpPower performs a power action and records the state reached.
func OpPower(action PowerAction) Op {
	return func(ctx context.Context, d Driver, r *Result) error {
		if err := d.Power(ctx, action); err != nil {
			return err
		}
		r.Power, _ = action.target()
		return nil
	}
}

// OpBootDevice sets the next boot device.
func OpBootDevice(dev BootDevice, opts BootOptions) Op {
	return func(ctx context.Context, d Driver, r *Result) error {
		return d.SetBootDevice(ctx, dev, opts)
	}
}

// OpInventory reads the inventory.
func OpInventory(ctx context.Context, d Driver, r *Result) error {
	inv, err := d.Inventory(ctx)
	if err != nil {
		return err
	}
	r.Inventory = &inv
	r.Power = inv.Power
	return nil
}

// Failed reports whether any result is a failure.
func Failed(results []Result) bool {
	for _, r := range results {
		if r.Err != nil {
			return true
		}
	}
	return false
}

// ErrFleet is matched by the error FleetError returns.
var ErrFleet = errors.New("some machines failed")

// FleetError summarises failures, or returns nil if there were none.
func FleetError(results []Result) error {
	n := 0
	for _, r := range results {
		if r.Err != nil {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d of %d", ErrFleet, n, len(results))
}
