package procstat

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
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
