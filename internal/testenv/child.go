package testenv

import (
	"os/exec"
	"runtime"
	"syscall"
)

// Child is a process a test started with StartChild.
type Child struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartChild starts cmd so that it is SIGKILLed if the test process dies
// (a panic or a timeout skips every cleanup), and not before.
//
// Pdeathsig, the kernel's means for that, fires when the thread that
// forked the child ends, not the process, and a thread of a test process
// can end under a running child: Go ends the thread of a goroutine that
// returns while locked to it, as one that entered a network namespace
// does (pxe/tftp's enterNetns). So cmd is started, and waited for, on a
// goroutine locked to its thread until cmd.Wait returns: that thread lives
// as long as the child.
//
// StartChild sets cmd.SysProcAttr.Pdeathsig and keeps its other fields.
// The caller must not call cmd.Wait or cmd.Process.Wait (Child.Wait
// returns cmd.Wait's result), nor read cmd.StdoutPipe or StderrPipe, which
// cmd.Wait closes as the process ends: give cmd an os.Pipe's writer instead.
func StartChild(cmd *exec.Cmd) (*Child, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	c := &Child{Cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Unlocked once the child is reaped, so that Go keeps the thread.
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return c, nil
}

// Done is closed once the process has ended and cmd.Wait has returned.
func (c *Child) Done() <-chan struct{} { return c.done }

// Wait waits for the process to end and returns what cmd.Wait returned.
// Any goroutine may call it, any number of times.
func (c *Child) Wait() error {
	<-c.done
	return c.err
}
