// Package procstat reads the fields of /proc/PID/stat that metal's lab and
// benchmarks need: a process's state, parent, CPU time and start time.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is part of one process's /proc/PID/stat.
type Stat struct {
	State byte // R, S, D, Z, ...
	PPID  int
	// UTime and STime are the user and system CPU time used so far, in
	// clock ticks (USER_HZ, 100 on every Linux architecture Go builds
	// metal for).
	UTime, STime uint64
	// StartTime is when the process started, in clock ticks after boot:
	// with the PID, it tells a process from a later one that reuses it.
	StartTime uint64
	// MinFlt is the minor page faults of all the process's threads so
	// far: memory touched for the first time (or again, after the
	// process gave it back), each a trap into the kernel.
	MinFlt uint64
}

// Read reads /proc/PID/stat.
func Read(pid int) (Stat, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return Stat{}, err
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its last ')' are fixed. f[0] is field 3, the state.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("%s: unexpected format", path)
	}
	st := Stat{State: f[0][0]}
	for _, n := range []struct {
		field int // as proc(5) numbers them
		to    *uint64
	}{{10, &st.MinFlt}, {14, &st.UTime}, {15, &st.STime}, {22, &st.StartTime}} {
		if *n.to, err = strconv.ParseUint(f[n.field-3], 10, 64); err != nil {
			return Stat{}, fmt.Errorf("%s: field %d: %w", path, n.field, err)
		}
	}
	if st.PPID, err = strconv.Atoi(f[4-3]); err != nil {
		return Stat{}, fmt.Errorf("%s: ppid: %w", path, err)
	}
	return st, nil
}

// ContextSwitches returns how often the threads of process pid alive now
// gave up their CPU (voluntary: to wait) or had it taken away
// (involuntary), from each thread's /proc/PID/task/TID/status. A process
// whose threads hand work to one another wakes more threads for the same
// work, and each wake-up costs the kernel (and a hypervisor) a switch.
func ContextSwitches(pid int) (voluntary, involuntary uint64, err error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/status")
		if err != nil {
			continue // the thread ended meanwhile
		}
		for line := range strings.Lines(string(b)) {
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			var to *uint64
			switch name {
			case "voluntary_ctxt_switches":
				to = &voluntary
			case "nonvoluntary_ctxt_switches":
				to = &involuntary
			default:
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(value), 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("%s/%s/status: %s: %w", dir, task.Name(), name, err)
			}
			*to += n
		}
	}
	return voluntary, involuntary, nil
}
