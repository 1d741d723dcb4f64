package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/metal-dev/metal/internal/netns"
)

// stopGrace is how long a lab process has to end after SIGTERM: metal vbmc
// quits its VMs over QMP, metal serve closes its store.
const stopGrace = 10 * time.Second

// Down removes the lab in dir: it stops the processes the lab recorded (if
// they are still the ones it started), the VMs their BMCs started (by pid
// file), anything else still running in the lab's namespace, then the taps,
// the bridge and the namespace. The directory stays, with its logs, disks
// and state, for a look afterwards. Down of a lab that is not there does
// nothing; after a crash it removes what is left.
func Down(ctx context.Context, dir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	ns := NetnsName(dir)
	st, err := Load(dir)
	if err != nil && !errors.Is(err, ErrNoLab) {
		return err
	}
	var errs []error
	if st != nil {
		ns = st.Netns
		// metal serve first, so it does not see the BMCs vanish; BMCs
		// next, which stop their VMs themselves.
		for _, p := range slices.Backward(st.Procs) {
			if !p.Running() {
				continue
			}
			log.Info("stopping", "process", p.Name, "pid", p.PID)
			if err := p.stop(stopGrace); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", p.Name, err))
			}
		}
		// A VM outlives a BMC that was killed, and ipmi_sim's VMs are
		// daemonized: stop them by their pid files.
		for _, vm := range st.VMs {
			if pid, start := pidFileProc(vm.PIDFile); pid > 0 {
				log.Info("stopping", "vm", vm.Name, "pid", pid)
				if err := stopPID(pid, start, 5*time.Second); err != nil {
					errs = append(errs, fmt.Errorf("stop vm %s: %w", vm.Name, err))
				}
			}
		}
	}
	if netns.Exists(ns) {
		if err := sweep(ctx, ns, log); err != nil {
			errs = append(errs, err)
		}
		if st != nil {
			for _, vm := range st.VMs {
				_ = netns.IP(ctx, "-n", ns, "link", "del", vm.Tap)
			}
		}
		_ = netns.IP(ctx, "-n", ns, "link", "del", bridge)
		if err := netns.IP(ctx, "netns", "del", ns); err != nil {
			errs = append(errs, err)
		} else {
			log.Info("network namespace removed", "netns", ns)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, StateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// sweep ends every process left in the lab's namespace: what a crashed lab
// or an interrupted `lab apply` left. They are the lab's by where they run;
// nothing else is ever started in its namespace.
func sweep(ctx context.Context, ns string, log *slog.Logger) error {
	pids, err := netns.PIDs(ctx, ns)
	if err != nil {
		return err
	}
	type proc struct {
		pid   int
		start uint64
	}
	var left []proc
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue
		}
		start, err := procStart(pid)
		if err != nil {
			continue
		}
		log.Info("stopping a process left in the lab's namespace", "pid", pid, "netns", ns)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		left = append(left, proc{pid, start})
	}
	var errs []error
	for _, p := range left {
		if err := stopPID(p.pid, p.start, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
