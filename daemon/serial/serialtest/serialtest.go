// Package serialtest puts a real process on a pseudo-terminal behind a
// unix socket, the way QEMU serves a VM's serial console in the lab, for
// tests of the browser terminal: what the process prints is the
// console's output, and the terminal's line discipline echoes what is
// typed, as a machine's getty would. QEMU starts a real VM behind such a
// socket, booting a small kernel and initramfs.
package serialtest

import (
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/creack/pty"

	"github.com/metal-dev/metal/internal/syncbuf"
)

// Console is one machine's console socket with its process.
type Console struct {
	// Path is the unix socket.
	Path string
	in   syncbuf.Buffer
}

// Input is everything that reached the process's terminal.
func (c *Console) Input() string { return c.in.String() }

// Serve listens on dir/<machine>.sock; each connection gets a fresh
// `sh -c script` on a pseudo-terminal, killed when the connection ends.
// Everything stops when the test ends.
func Serve(t testing.TB, dir, machine, script string) *Console {
	t.Helper()
	c := &Console{Path: filepath.Join(dir, machine+".sock")}
	ln, err := net.Listen("unix", c.Path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.run(t, conn, script)
			}()
		}
	}()
	return c
}

func (c *Console) run(t testing.TB, conn net.Conn, script string) {
	defer conn.Close()
	cmd := exec.Command("sh", "-c", script)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		t.Errorf("start %q on a pty: %v", script, err)
		return
	}
	defer func() {
		_ = cmd.Process.Kill() // our own child, by its PID
		_ = cmd.Wait()
	}()
	defer tty.Close()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(conn, tty)
		done <- struct{}{}
	}()
	go func() {
		// Recorded before the pty has it: once the echo is seen, Input
		// holds the keys.
		_, _ = io.Copy(io.MultiWriter(&c.in, tty), conn)
		done <- struct{}{}
	}()
	<-done
}
