package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// serveProc is the name metal serve is recorded under in lab.json.
const serveProc = "serve"

// StartServe starts `metal serve` for the lab's site (with the lab's
// ServeArgs) inside its namespace and waits (up to timeout) until its HTTP
// server answers. metal is the binary to run.
func (st *State) StartServe(ctx context.Context, metal string, timeout time.Duration) (Proc, error) {
	args := append([]string{"--console-socket", filepath.Join(st.Dir, "vms", "{machine}", "console.sock")}, st.ServeArgs...)
	return st.StartServeAs(ctx, serveProc, metal, append(args, st.Site), timeout)
}

// StartServeAs starts `metal serve ARGS...` inside the lab's namespace,
// recorded in lab.json as name (so `lab down` stops it) with its log in
// logs/NAME.log, and waits (up to timeout) until metal's HTTP server
// answers on the lab's address. A second metal for the lab, such as a
// promoted disaster-recovery standby with its own site file, runs so.
func (st *State) StartServeAs(ctx context.Context, name, metal string, args []string, timeout time.Duration) (Proc, error) {
	if p, ok := st.Proc(name); ok && p.Running() {
		return p, nil
	}
	// The record of the stopped one it replaces goes.
	st.Procs = slices.DeleteFunc(st.Procs, func(q Proc) bool { return q.Name == name })
	p, err := st.startRecorded(ctx, name, name, timeout, func(wait context.Context, p Proc) error {
		return waitHTTP(wait, st.Netns, p, st.HTTPURL()+"/")
	}, metal, append([]string{"serve"}, args...)...)
	if err != nil {
		return p, fmt.Errorf("metal serve: %w", err)
	}
	return p, nil
}

// StopServe stops the lab's metal serve, if it runs, and reports whether it
// did: `metal apply` serves the site itself and needs the store that serve
// holds.
func (st *State) StopServe() (bool, error) {
	p, ok := st.Proc(serveProc)
	if !ok || !p.Running() {
		return false, nil
	}
	if err := p.stop(stopGrace); err != nil {
		return false, fmt.Errorf("stop metal serve: %w", err)
	}
	return true, nil
}
