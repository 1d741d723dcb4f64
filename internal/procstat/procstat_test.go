package procstat

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestReadSelfAndChild(t *testing.T) {
	self, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self.State != 'R' && self.State != 'S' {
		t.Errorf("own state %q, want R or S", self.State)
	}
	if self.PPID != os.Getppid() {
		t.Errorf("own ppid %d, want %d", self.PPID, os.Getppid())
	}
	if self.StartTime == 0 {
		t.Error("own start time 0")
	}
	if self.MinFlt == 0 {
		t.Error("no page faults of its own: a Go process touches fresh memory as it starts")
	}

	// A child whose command name (the file it runs) holds spaces and
	// parentheses.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep:", err)
	}
	odd := filepath.Join(t.TempDir(), "a (b) c")
	if err := os.Symlink(sleep, odd); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	child, err := Read(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "comm")); string(comm) != "a (b) c\n" {
		t.Fatalf("child's command name is %q, want the odd one", comm)
	}
	if child.PPID != os.Getpid() {
		t.Errorf("child ppid %d, want %d", child.PPID, os.Getpid())
	}
	if child.StartTime < self.StartTime {
		t.Errorf("child started at %d, before its parent at %d", child.StartTime, self.StartTime)
	}

	if _, err := Read(-1); err == nil {
		t.Error("Read(-1) succeeded")
	}
}

// TestContextSwitches: a process that sleeps and wakes over and over
// gives up its CPU each time, on every thread counted.
func TestContextSwitches(t *testing.T) {
	v0, _, err := ContextSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	for range 4 {
		go func() {
			for range 50 {
				time.Sleep(time.Millisecond)
			}
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}
	v1, _, err := ContextSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// 200 sleeps, however the runtime spreads them over its threads:
	// each thread with nothing to run sleeps too.
	if v1-v0 < 50 {
		t.Errorf("%d voluntary context switches over 200 sleeps of 1 ms", v1-v0)
	}
	if _, _, err := ContextSwitches(-1); err == nil {
		t.Error("ContextSwitches(-1) succeeded")
	}
}
