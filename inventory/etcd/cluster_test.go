package etcd_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cluster is a real etcd cluster of Debian's etcd-server binary, on loopback
// ports, with its data in the test's temp dir. The test kills what it
// started, by PID, at cleanup.
type cluster struct {
	t       *testing.T
	bin     string
	members []*member
}

type member struct {
	name, dir          string
	clientURL, peerURL string
	cmd                *exec.Cmd
	exited             chan struct{}
	log                string
}

func etcdBinary(t *testing.T) string {
	for _, p := range []string{"/usr/bin/etcd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	t.Fatal("etcd server binary not found: install the Debian package etcd-server (apt-get install etcd-server)")
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: etcdBinary(t)}
	dir := t.TempDir()
	var initial []string
	for i := range n {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(dir, fmt.Sprintf("m%d", i)),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
			log:       filepath.Join(dir, fmt.Sprintf("m%d.log", i)),
		}
		initial = append(initial, m.name+"="+m.peerURL)
		c.members = append(c.members, m)
	}
	for i := range c.members {
		c.start(i, strings.Join(initial, ","))
	}
	for i := range c.members {
		c.waitHealthy(i)
	}
	return c
}

// start runs member i (again, with its existing data dir on a restart).
func (c *cluster) start(i int, initialCluster string) {
	c.t.Helper()
	m := c.members[i]
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	args := []string{
		"--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster-token", "metal-test", "--initial-cluster-state", "new",
		// Fast elections: loopback has no latency to allow for.
		"--heartbeat-interval", "50", "--election-timeout", "500",
		"--logger", "zap", "--log-level", "warn",
	}
	if initialCluster != "" {
		args = append(args, "--initial-cluster", initialCluster)
	}
	m.cmd = exec.Command(c.bin, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	// If the test binary dies (a panic skips Cleanup), etcd dies with it.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		c.t.Fatalf("start etcd: %v", err)
	}
	logf.Close()
	m.exited = make(chan struct{})
	cmd, exited := m.cmd, m.exited
	go func() { cmd.Wait(); close(exited) }()
	c.t.Cleanup(func() {
		cmd.Process.Kill() // by PID (pidfd), only the process this test started
		<-exited
		if c.t.Failed() {
			if b, err := os.ReadFile(m.log); err == nil {
				c.t.Logf("etcd %s log (tail):\n%s", m.name, tail(string(b), 2000))
			}
		}
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (c *cluster) waitHealthy(i int) {
	c.t.Helper()
	m := c.members[i]
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-m.exited:
			b, _ := os.ReadFile(m.log)
			c.t.Fatalf("etcd %s exited at start:\n%s", m.name, tail(string(b), 2000))
		default:
		}
		resp, err := http.Get(m.clientURL + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"health":"true"`) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("etcd %s not healthy after 20s", m.name)
}

// stop ends member i: SIGTERM, as an operator's "systemctl stop" would;
// kill=true sends SIGKILL, as a crash would.
func (c *cluster) stop(i int, kill bool) {
	c.t.Helper()
	m := c.members[i]
	sig := os.Interrupt
	if kill {
		sig = os.Kill
	}
	m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(20 * time.Second):
		c.t.Fatalf("etcd %s did not stop", m.name)
	}
}

func (c *cluster) endpoints(idx ...int) []string {
	if len(idx) == 0 {
		for i := range c.members {
			idx = append(idx, i)
		}
	}
	var eps []string
	for _, i := range idx {
		eps = append(eps, strings.TrimPrefix(c.members[i].clientURL, "http://"))
	}
	return eps
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
