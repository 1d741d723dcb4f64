// Package etcdtest runs a real etcd cluster (Debian's etcd-server binary) on
// loopback ports for tests and benchmarks: started, killed and restarted by
// PID, with its data in a directory the caller owns. A cluster may also run
// inside a test's network namespace (Options.Netns), on an address of its
// own there, for servers in other namespaces of the same lab.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/internal/testenv"
)

// Binary returns the etcd server binary, or an error saying what to install.
func Binary() (string, error) {
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd", nil
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	return "", errors.New("etcd server binary not found: install the Debian package etcd-server (apt-get install etcd-server)")
}

// Options say where a cluster runs.
type Options struct {
	// Netns is a network namespace (ip netns) the members run in; the
	// caller created it and removes it. Default: this process's.
	Netns string
	// Host is the address the members listen on (default 127.0.0.1).
	Host string
}

// Cluster is a running etcd cluster.
type Cluster struct {
	bin     string
	opts    Options
	members []*member
}

// Dial connects to the cluster from where its members run (inside
// Options.Netns when set).
func (c *Cluster) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.opts.Netns != "" {
		return netns.Dialer(c.opts.Netns)(ctx, network, addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

type member struct {
	name, dir          string
	clientURL, peerURL string
	log                string
	cmd                *exec.Cmd
	exited             <-chan struct{}
}

// Start runs an n-member cluster with its data and logs under dir and waits
// until every member is healthy. Close (or Kill of each member) ends it.
func Start(dir string, n int) (*Cluster, error) { return StartWith(dir, n, Options{}) }

// StartWith is Start placed as opts say.
func StartWith(dir string, n int, opts Options) (*Cluster, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	c := &Cluster{bin: bin, opts: opts}
	for i := range n {
		cp, err := testenv.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		pp, err := testenv.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		c.members = append(c.members, &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(dir, fmt.Sprintf("m%d", i)),
			clientURL: "http://" + net.JoinHostPort(opts.Host, strconv.Itoa(cp)),
			peerURL:   "http://" + net.JoinHostPort(opts.Host, strconv.Itoa(pp)),
			log:       filepath.Join(dir, fmt.Sprintf("m%d.log", i)),
		})
	}
	for i := range c.members {
		if err := c.Restart(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	for i := range c.members {
		if err := c.WaitHealthy(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// New starts an n-member cluster for a test, in the test's temp dir, and
// kills it at cleanup (logging the members' logs if the test failed).
func New(t testing.TB, n int) *Cluster { t.Helper(); return NewWith(t, n, Options{}) }

// NewWith is New placed as opts say.
func NewWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	testenv.Integration(t, "etcd (Debian etcd-server)")
	c, err := StartWith(t.TempDir(), n, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, m := range c.members {
				if b, err := os.ReadFile(m.log); err == nil {
					t.Logf("etcd %s log (tail):\n%s", m.name, tail(string(b), 2000))
				}
			}
		}
	})
	return c
}

func (c *Cluster) initialCluster() string {
	var parts []string
	for _, m := range c.members {
		parts = append(parts, m.name+"="+m.peerURL)
	}
	return strings.Join(parts, ",")
}

// Restart (re)starts member i on its data directory; it does not wait for
// it to be healthy (WaitHealthy does).
func (c *Cluster) Restart(i int) error {
	m := c.members[i]
	if m.cmd != nil {
		select {
		case <-m.exited:
		default:
			return fmt.Errorf("etcd %s is still running", m.name)
		}
	}
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{c.bin,
		"--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster-token", "metal-test", "--initial-cluster-state", "new",
		"--initial-cluster", c.initialCluster(),
		// Fast elections: loopback has no latency to allow for.
		"--heartbeat-interval", "50", "--election-timeout", "500",
		"--logger", "zap", "--log-level", "warn"}
	if c.opts.Netns != "" {
		// ip netns exec execs etcd: the pid stays etcd's.
		args = append([]string{"ip", "netns", "exec", c.opts.Netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies (a panic skips cleanup), etcd dies with it.
	child, err := testenv.StartChild(cmd)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	m.cmd, m.exited = cmd, child.Done()
	return nil
}

// WaitHealthy waits (up to 20s) until member i answers its health check.
func (c *Cluster) WaitHealthy(i int) error {
	m := c.members[i]
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: c.Dial}}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-m.exited:
			b, _ := os.ReadFile(m.log)
			return fmt.Errorf("etcd %s exited at start:\n%s", m.name, tail(string(b), 2000))
		default:
		}
		resp, err := client.Get(m.clientURL + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"health":"true"`) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("etcd %s not healthy after 20s", m.name)
}

// Stop ends member i and waits for it: SIGTERM as an operator's stop
// would, or with kill SIGKILL as a crash would.
func (c *Cluster) Stop(i int, kill bool) error {
	m := c.members[i]
	if m.cmd == nil {
		return nil
	}
	sig := os.Interrupt
	if kill {
		sig = os.Kill
	}
	select {
	case <-m.exited:
		return nil
	default:
	}
	m.cmd.Process.Signal(sig) // by PID: only the process this package started
	select {
	case <-m.exited:
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("etcd %s did not stop", m.name)
	}
}

// PID is member i's process ID (0 if it never started).
func (c *Cluster) PID(i int) int {
	if m := c.members[i]; m.cmd != nil && m.cmd.Process != nil {
		return m.cmd.Process.Pid
	}
	return 0
}

// Close kills every member.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Stop(i, true)
	}
}

// Endpoints are the host:port client addresses of the given members (all
// if none given).
func (c *Cluster) Endpoints(idx ...int) []string {
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

// StateURL is the site state URL of the cluster under prefix
// ("etcd://127.0.0.1:2379,.../prefix").
func (c *Cluster) StateURL(prefix string) string {
	return "etcd://" + strings.Join(c.Endpoints(), ",") + "/" + strings.Trim(prefix, "/")
}

// Leader is the index of the member that leads raft now, asked of the
// members that answer (fault tests kill the leader: the worst member to
// lose).
func (c *Cluster) Leader() (int, error) {
	eps := c.Endpoints()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, DialOptions: []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return c.Dial(ctx, "tcp", addr) })}})
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, ep := range eps {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			continue // a stopped member
		}
		if st.Header.MemberId == st.Leader {
			return i, nil
		}
	}
	return 0, errors.New("no etcd member leads raft")
}

// Name is member i's name; Log the path of its log.
func (c *Cluster) Name(i int) string { return c.members[i].name }
func (c *Cluster) Log(i int) string  { return c.members[i].log }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
