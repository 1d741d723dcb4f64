package backup_test

import (
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

	"github.com/metal-dev/metal/inventory/backup"
)

// sshd is a real OpenSSH server on a loopback port, with a temp host key and
// an authorized client key, started and killed (by process group of the PID
// it started) by the test.
type sshd struct {
	t          *testing.T
	dir        string
	port       int
	hostPub    ssh.PublicKey
	clientKey  string // private key file
	knownHosts string
	config     string
	cmd        *exec.Cmd
	exited     chan struct{}
}

func writeKey(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func startSSHD(t *testing.T) *sshd {
	t.Helper()
	const bin = "/usr/sbin/sshd"
	if _, err := os.Stat(bin); err != nil {
		t.Fatal("sshd not found: install the Debian package openssh-server (apt-get install openssh-server)")
	}
	// sshd refuses to start without its privilege separation directory
	// (systemd creates it on a normal install).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshd needs /run/sshd: %v", err)
	}
	dir := t.TempDir()
	s := &sshd{t: t, dir: dir, clientKey: filepath.Join(dir, "id_ed25519"), knownHosts: filepath.Join(dir, "known_hosts"), config: filepath.Join(dir, "sshd_config")}
	s.hostPub = writeKey(t, filepath.Join(dir, "host_ed25519"))
	clientPub := writeKey(t, s.clientKey)
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.trust(s.hostPub)
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
LogLevel ERROR
`, s.port, filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "sshd.pid"), filepath.Join(dir, "authorized_keys"))
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	return s
}

// trust writes known_hosts with key for the server's [127.0.0.1]:port.
// A nil key leaves known_hosts empty.
func (s *sshd) trust(key ssh.PublicKey) {
	var line string
	if key != nil {
		line = knownhosts.Line([]string{knownhosts.Normalize(fmt.Sprintf("127.0.0.1:%d", s.port))}, key) + "\n"
	}
	if err := os.WriteFile(s.knownHosts, []byte(line), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sshd) start() {
	s.t.Helper()
	logf, err := os.OpenFile(filepath.Join(s.dir, "sshd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", s.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies (a panic skips Cleanup), sshd dies with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start sshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	s.t.Cleanup(func() { s.kill(cmd, exited) })
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(s.dir, "sshd.log"))
			s.t.Fatalf("sshd exited at start:\n%s", b)
		default:
		}
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatal("sshd not listening after 10s")
}

// kill SIGKILLs the sshd this test started and its descendants (the
// per-connection processes, which call setsid and so leave its process
// group), as a crashing server host would lose them all.
func (s *sshd) kill(cmd *exec.Cmd, exited chan struct{}) {
	select {
	case <-exited:
		// Already killed by the test; its PID may be reused by now.
		return
	default:
	}
	// Stop the listener first so it forks no new children, then the
	// children (still its descendants while it is unreaped), then reap.
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

func (s *sshd) target() backup.Target {
	u, err := user.Current()
	if err != nil {
		s.t.Fatal(err)
	}
	return backup.Target{User: u.Username, Host: "127.0.0.1", Port: s.port, Dir: filepath.Join(s.dir, "snapshots")}
}

func (s *sshd) opts() backup.SSHOptions {
	return backup.SSHOptions{KnownHosts: s.knownHosts, KeyFiles: []string{s.clientKey}, AgentSocket: "none", Timeout: 5 * time.Second}
}
