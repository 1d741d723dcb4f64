package testenv

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestStartChildOutlivesThread: a child started by StartChild from a
// goroutine whose thread Go then ends lives on, while one started there
// directly with Pdeathsig is killed. Each is then sent SIGTERM, and how it
// ended tells which: the kernel sends Pdeathsig's SIGKILL as the thread
// exits, before the thread leaves /proc, and a process being killed takes
// no other signal; a child still alive ends on SIGTERM.
func TestStartChildOutlivesThread(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	tests := map[string]struct {
		start func(*exec.Cmd) (*Child, error)
		want  syscall.Signal
	}{
		"StartChild": {start: StartChild, want: syscall.SIGTERM},
		"forked on the thread": {start: func(cmd *exec.Cmd) (*Child, error) {
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			c := &Child{Cmd: cmd, done: make(chan struct{})}
			go func() { c.err = cmd.Wait(); close(c.done) }()
			return c, nil
		}, want: syscall.SIGKILL},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var c *Child
			var err error
			onEndingThread(t, func() { c, err = tc.start(exec.Command(sleep, "60")) })
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == syscall.SIGTERM {
				if err := syscall.Kill(c.Cmd.Process.Pid, 0); err != nil {
					t.Errorf("child after its starting thread ended: %v", err)
				}
			}
			_ = c.Cmd.Process.Signal(syscall.SIGTERM) // by PID: this test's child
			select {
			case <-c.Done():
			case <-time.After(time.Minute):
				_ = c.Cmd.Process.Kill()
				t.Fatal("child did not end on SIGTERM in a minute")
			}
			var ee *exec.ExitError
			if err := c.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != tc.want {
				t.Errorf("child ended with %v, want signal %v", err, tc.want)
			}
		})
	}
}

// onEndingThread runs f on a goroutine locked to a thread that Go ends
// when f returns, and returns once that thread is gone.
func onEndingThread(t *testing.T, f func()) {
	t.Helper()
	task := "/proc/self/task/" + strconv.Itoa(endingThread(f))
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %s did not end in a minute", task)
		}
	}
}

// endingThread runs f as onEndingThread says and returns its thread's ID.
func endingThread(f func()) int {
	tid := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		if syscall.Gettid() == os.Getpid() {
			// Go never ends the main thread: run f on another, while
			// this goroutine holds the main one.
			defer runtime.UnlockOSThread()
			tid <- endingThread(f)
			return
		}
		f()
		tid <- syscall.Gettid()
		// Returns locked: Go ends the thread.
	}()
	return <-tid
}
