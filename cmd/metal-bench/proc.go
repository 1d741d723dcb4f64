package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/metal-dev/metal/internal/freeport"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is a server the benchmark started (metal or a peer). It is stopped
// by its own PID only: SIGTERM, then SIGKILL if it lingers.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // file holding its stdout and stderr
	done chan struct{}
	err  error
}

// startProc starts argv with its output in logPath. argv[0] is looked up
// on PATH (and in /usr/sbin, where Debian puts servers).
func startProc(name, logPath string, env []string, argv ...string) (*proc, error) {
	path, err := lookTool(argv[0])
	if err != nil {
		return nil, err
	}
	out, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, so a ^C at the terminal reaches the
	// benchmark, which stops the server itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, with its log's tail as the
// error.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, tail(p.log, 600))
	default:
		return nil
	}
}

// stop ends the process by its PID and waits for it.
func (p *proc) stop() {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// lookTool finds a program on PATH or in the sbin directories, which a
// non-login root shell may lack on its PATH.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: run `make bench-deps` (Debian packages)", name)
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// freePort returns a loopback port free right now (for UDP or TCP).
func freePort(network string) (int, error) { return freeport.Get(network, "127.0.0.1") }

// waitTCP waits until addr accepts connections or p exits.
func waitTCP(ctx context.Context, p *proc, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if err := p.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not listen on %s: %w", p.name, addr, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// netLab is two network namespaces joined by a veth pair: the server's
// (192.0.2.1) and the load generator's (192.0.2.2). Servers bind to
// serverIf, perfdhcp to clientIf. Nothing is created in the root
// namespace except for the instant the veth pair is made.
type netLab struct {
	server, client     string // namespace names
	serverIf, clientIf string
}

const (
	labServerIP = "192.0.2.1"
	labClientIP = "192.0.2.2"
)

func newNetLab() (*netLab, error) {
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	l := &netLab{server: "mbench-s" + id, client: "mbench-c" + id, serverIf: "mbs" + id, clientIf: "mbc" + id}
	steps := [][]string{
		{"netns", "add", l.server},
		{"netns", "add", l.client},
		{"link", "add", l.serverIf, "netns", l.server, "type", "veth", "peer", "name", l.clientIf, "netns", l.client},
		{"-n", l.server, "addr", "add", labServerIP + "/24", "dev", l.serverIf},
		{"-n", l.client, "addr", "add", labClientIP + "/24", "dev", l.clientIf},
		{"-n", l.server, "link", "set", l.serverIf, "up"},
		{"-n", l.client, "link", "set", l.clientIf, "up"},
		{"-n", l.server, "link", "set", "lo", "up"},
		{"-n", l.client, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			l.close()
			return nil, fmt.Errorf("ip %s: %v: %s (network namespaces need root and iproute2)", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return l, nil
}

// close deletes both namespaces, which removes the veth pair.
func (l *netLab) close() {
	for _, ns := range []string{l.server, l.client} {
		exec.Command("ip", "netns", "delete", ns).Run()
	}
}

// in returns argv run inside namespace ns (ip netns exec execs the program,
// so the PID started is the server's own).
func (l *netLab) in(ns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}
