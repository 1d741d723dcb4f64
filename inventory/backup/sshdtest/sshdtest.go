// Package sshdtest runs a real OpenSSH sshd on a loopback port for tests of
// SFTP backups: a temp host key, an authorized client key, a known_hosts
// file, started and SIGKILLed (with its session processes) by PID.
package sshdtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/metal-dev/metal/internal/testenv"
)

// Server is a running sshd.
type Server struct {
	t   testing.TB
	Dir string
	// Port is the loopback port sshd listens on.
	Port int
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey
	// ClientKey is the private key file sshd authorizes; KnownHosts the
	// known_hosts file trusting HostKey for 127.0.0.1:Port.
	ClientKey  string
	KnownHosts string
	config     string
	opts       Options
	cmd        *exec.Cmd
	exited     <-chan struct{}
}

// WriteKey writes a new ed25519 private key (OpenSSH PEM) to path and
// returns its public key.
func WriteKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	k, err := writeKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeKey(path string) (ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewPublicKey(pub)
}

// Options place sshd in another network namespace than the test's.
type Options struct {
	// Netns is a named network namespace (ip netns) to run sshd in, on
	// that namespace's loopback: for clients that run inside it.
	Netns string
	// Dial connects from where the clients are, to wait until sshd
	// listens; with Netns, a dialer that enters it. Default net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Second is another loopback address (127.0.0.2) sshd listens on as
	// well, on the same port, trusted in KnownHosts too: a test can cut
	// the path through 127.0.0.1 and keep this one whole (URLVia).
	Second string
}

// Start runs sshd for the test; it is killed at cleanup.
func Start(t testing.TB) *Server { return StartWith(t, Options{}) }

// StartWith runs sshd for the test as opts say; it is killed at cleanup.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	testenv.Integration(t, "sshd (Debian openssh-server)")
	s, err := setup(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	s.Restart()
	return s
}

// Run runs sshd with its files in dir, for a program that is not a test
// (the benchmarks); the caller ends it with Kill.
func Run(dir string, opts Options) (*Server, error) {
	s, err := setup(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := s.restart(); err != nil {
		return nil, err
	}
	return s, nil
}

// setup writes sshd's keys and configuration into dir.
func setup(dir string, opts Options) (*Server, error) {
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{}).DialContext
	}
	const bin = "/usr/sbin/sshd"
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("sshd not found: install the Debian package openssh-server (apt-get install openssh-server)")
	}
	// sshd refuses to start without its privilege separation directory
	// (systemd creates it on a normal install).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("sshd needs /run/sshd: %w", err)
	}
	s := &Server{Dir: dir, ClientKey: filepath.Join(dir, "id_ed25519"), KnownHosts: filepath.Join(dir, "known_hosts"), config: filepath.Join(dir, "sshd_config"), opts: opts}
	var err error
	if s.HostKey, err = writeKey(filepath.Join(dir, "host_ed25519")); err != nil {
		return nil, err
	}
	clientPub, err := writeKey(s.ClientKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := s.trust(s.HostKey); err != nil {
		return nil, err
	}
	listen := "ListenAddress 127.0.0.1\n"
	if opts.Second != "" {
		listen += "ListenAddress " + opts.Second + "\n"
	}
	cfg := fmt.Sprintf(`Port %d
%sHostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
LogLevel ERROR
`, s.Port, listen, filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "sshd.pid"), filepath.Join(dir, "authorized_keys"))
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	return s, nil
}

// Trust writes known_hosts with key for the server's [127.0.0.1]:port.
// A nil key leaves known_hosts empty.
func (s *Server) Trust(key ssh.PublicKey) {
	if err := s.trust(key); err != nil {
		s.t.Fatal(err)
	}
}

func (s *Server) trust(key ssh.PublicKey) error {
	var line string
	if key != nil {
		hosts := []string{knownhosts.Normalize(fmt.Sprintf("127.0.0.1:%d", s.Port))}
		if s.opts.Second != "" {
			hosts = append(hosts, knownhosts.Normalize(net.JoinHostPort(s.opts.Second, fmt.Sprint(s.Port))))
		}
		line = knownhosts.Line(hosts, key) + "\n"
	}
	return os.WriteFile(s.KnownHosts, []byte(line), 0o600)
}

// Restart starts sshd (again, after Kill: same port, keys and files) and
// waits until it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	err := s.restart()
	// Registered even after a failed start: sshd may run all the same.
	if cmd, exited := s.cmd, s.exited; cmd != nil {
		s.t.Cleanup(func() { kill(cmd, exited) })
	}
	if err != nil {
		s.t.Fatal(err)
	}
}

func (s *Server) restart() error {
	logf, err := os.OpenFile(filepath.Join(s.Dir, "sshd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	argv := []string{"/usr/sbin/sshd", "-D", "-e", "-f", s.config}
	if s.opts.Netns != "" {
		// ip netns exec execs sshd: the pid stays sshd's.
		argv = append([]string{"ip", "netns", "exec", s.opts.Netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies (a panic skips Cleanup), sshd dies with it.
	child, err := testenv.StartChild(cmd)
	if err != nil {
		return fmt.Errorf("start sshd: %w", err)
	}
	exited := child.Done()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(s.Dir, "sshd.log"))
			return fmt.Errorf("sshd exited at start:\n%s", b)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := s.opts.Dial(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", s.Port))
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	kill(cmd, exited)
	return fmt.Errorf("sshd not listening after 10s")
}

// Kill SIGKILLs sshd and its session processes, as a crashing server host
// would lose them all.
func (s *Server) Kill() { kill(s.cmd, s.exited) }

func kill(cmd *exec.Cmd, exited <-chan struct{}) {
	select {
	case <-exited:
		// Already killed; its PID may be reused by now.
		return
	default:
	}
	// Stop the listener first so it forks no new children, then the
	// children (which call setsid and so leave its process group, but stay
	// its descendants while it is unreaped), then reap.
	cmd.Process.Signal(syscall.SIGSTOP)
	for _, pid := range descendants(cmd.Process.Pid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	cmd.Process.Kill()
	<-exited
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so parse after ')'.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 {
			if pp, err := strconv.Atoi(f[1]); err == nil {
				parent[p] = pp
			}
		}
	}
	var out []int
	frontier := []int{pid}
	for len(frontier) > 0 {
		cur := frontier[0]
		frontier = frontier[1:]
		for p, pp := range parent {
			if pp == cur {
				out = append(out, p)
				frontier = append(frontier, p)
			}
		}
	}
	return out
}

// User is the login the tests connect as: the current user.
func (s *Server) User() string {
	u, err := user.Current()
	if err != nil {
		return "root" // the benchmarks run as root
	}
	return u.Username
}

// URL is sftp://USER@127.0.0.1:PORT/<Dir>/<sub>, a backup target.
func (s *Server) URL(sub string) string { return s.URLVia("127.0.0.1", sub) }

// URLVia is URL through addr: 127.0.0.1 or Options.Second.
func (s *Server) URLVia(addr, sub string) string {
	return fmt.Sprintf("sftp://%s@%s/%s", s.User(), net.JoinHostPort(addr, fmt.Sprint(s.Port)), filepath.Join(s.Dir, sub))
}
