package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Errors of host key checking.
var (
	ErrUnknownHostKey = errors.New("unknown ssh host key")
	ErrHostKeyChanged = errors.New("ssh host key changed")
)

// Target is where snapshots live: sftp://user@host[:port]/path.
type Target struct {
	User string
	Host string
	Port int
	Dir  string
}

// ParseTarget parses sftp://user@host[:port]/path. The path is absolute
// (sftp://u@h//srv/metal) or relative to the user's home (sftp://u@h/metal).
func ParseTarget(raw string) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Target{}, fmt.Errorf("backup target %q: %w", raw, err)
	}
	if u.Scheme != "sftp" || u.Hostname() == "" {
		return Target{}, fmt.Errorf("backup target %q: want sftp://user@host[:port]/path", raw)
	}
	t := Target{Host: u.Hostname(), Port: 22, Dir: strings.TrimPrefix(u.Path, "/")}
	if t.Dir == "" {
		t.Dir = "."
	}
	if u.User != nil {
		t.User = u.User.Username()
	}
	if p := u.Port(); p != "" {
		if t.Port, err = strconv.Atoi(p); err != nil {
			return Target{}, fmt.Errorf("backup target %q: port %q", raw, p)
		}
	}
	return t, nil
}

func (t Target) String() string {
	return fmt.Sprintf("sftp://%s@%s/%s", t.User, net.JoinHostPort(t.Host, strconv.Itoa(t.Port)), t.Dir)
}

// SSHOptions says how to authenticate. The zero value uses the user's
// ssh-agent (SSH_AUTH_SOCK), ~/.ssh/id_ed25519, id_ecdsa, id_rsa and
// ~/.ssh/known_hosts, like ssh(1).
type SSHOptions struct {
	// KnownHosts is the known_hosts file (default ~/.ssh/known_hosts). An
	// unknown or changed host key is always refused.
	KnownHosts string
	// KeyFiles are private keys to offer (default ~/.ssh/id_*). Encrypted
	// keys are skipped (use the agent for them).
	KeyFiles []string
	// AgentSocket is the ssh-agent socket (default $SSH_AUTH_SOCK; "none"
	// disables the agent).
	AgentSocket string
	Timeout     time.Duration // dial and handshake (default 15s)
	Logger      *slog.Logger
}

// Remote is an open SFTP connection to a Target's directory.
type Remote struct {
	target Target
	conn   *ssh.Client
	sftp   *sftp.Client
	log    *slog.Logger
}

// Dial connects and authenticates to t, and creates t.Dir if needed.
func Dial(ctx context.Context, t Target, opts SSHOptions) (*Remote, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	home, _ := os.UserHomeDir()
	if opts.KnownHosts == "" {
		opts.KnownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	if opts.KeyFiles == nil {
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			opts.KeyFiles = append(opts.KeyFiles, filepath.Join(home, ".ssh", n))
		}
	}
	if opts.AgentSocket == "" {
		opts.AgentSocket = os.Getenv("SSH_AUTH_SOCK")
	}
	hostKey, algos, err := hostKeyCheck(opts.KnownHosts, t)
	if err != nil {
		return nil, err
	}
	signers, closeAgent := signers(opts)
	defer closeAgent()
	if len(signers) == 0 {
		return nil, fmt.Errorf("%s: no ssh key: no agent at SSH_AUTH_SOCK and no usable key in %s", t, strings.Join(opts.KeyFiles, ", "))
	}
	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback:   hostKey,
		HostKeyAlgorithms: algos,
		Timeout:           opts.Timeout,
	}
	addr := net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	d := net.Dialer{Timeout: opts.Timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	// The handshake has no context; a deadline bounds it instead.
	nc.SetDeadline(time.Now().Add(opts.Timeout))
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	nc.SetDeadline(time.Time{})
	conn := ssh.NewClient(c, chans, reqs)
	sc, err := sftp.NewClient(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: start sftp: %w", t, err)
	}
	r := &Remote{target: t, conn: conn, sftp: sc, log: opts.Logger}
	if err := sc.MkdirAll(t.Dir); err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: create directory: %w", t, err)
	}
	return r, nil
}

// hostKeyCheck builds the known_hosts callback with messages that say what
// to do, and the host key algorithms known for the host: without them the
// server may present a key type known_hosts does not list for it, which
// would look like a changed key.
func hostKeyCheck(file string, t Target) (ssh.HostKeyCallback, []string, error) {
	if _, err := os.Stat(file); err != nil {
		return nil, nil, fmt.Errorf("%s: known_hosts %s: %w (host keys are always checked; add the server's key with ssh-keyscan after verifying it)", t, file, err)
	}
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, nil, fmt.Errorf("known_hosts %s: %w", file, err)
	}
	addr := net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	hostname := knownhosts.Normalize(addr)
	var algos []string
	var ke *knownhosts.KeyError
	if err := cb(addr, &net.TCPAddr{IP: net.ParseIP(t.Host), Port: t.Port}, probeKey{}); errors.As(err, &ke) {
		for _, k := range ke.Want {
			switch typ := k.Key.Type(); typ {
			case ssh.KeyAlgoRSA:
				algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
			default:
				algos = append(algos, typ)
			}
		}
	}
	check := func(h string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(h, remote, key)
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) {
			return err
		}
		fp := ssh.FingerprintSHA256(key)
		if len(ke.Want) == 0 {
			return fmt.Errorf("host key of %s is not in %s (fingerprint %s); verify it and add it, e.g. ssh-keyscan -p %d %s >> %s: %w",
				hostname, file, fp, t.Port, t.Host, file, ErrUnknownHostKey)
		}
		w := ke.Want[0]
		return fmt.Errorf("host key of %s has CHANGED: it presents %s, but %s:%d expects %s; someone may be intercepting the connection, refusing to connect: %w",
			hostname, fp, w.Filename, w.Line, ssh.FingerprintSHA256(w.Key), ErrHostKeyChanged)
	}
	return check, algos, nil
}

// probeKey is a key no host has; checking it yields the host's known keys.
type probeKey struct{}

func (probeKey) Type() string                        { return "metal-probe" }
func (probeKey) Marshal() []byte                     { return []byte("metal-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe") }

func signers(opts SSHOptions) ([]ssh.Signer, func()) {
	var out []ssh.Signer
	closeFn := func() {}
	if opts.AgentSocket != "" && opts.AgentSocket != "none" {
		if c, err := net.Dial("unix", opts.AgentSocket); err == nil {
			if ss, err := agent.NewClient(c).Signers(); err == nil {
				out = append(out, ss...)
				// Agent signers sign through the socket during the
				// handshake; it closes after Dial.
				closeFn = func() { c.Close() }
			} else {
				c.Close()
				opts.Logger.Warn("ssh-agent: cannot list keys", "err", err)
			}
		} else {
			opts.Logger.Warn("ssh-agent unreachable", "socket", opts.AgentSocket, "err", err)
		}
	}
	for _, f := range opts.KeyFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			opts.Logger.Warn("ssh key skipped (encrypted keys need the agent)", "file", f, "err", err)
			continue
		}
		out = append(out, s)
	}
	return out, closeFn
}

// Close ends the connection.
func (r *Remote) Close() error {
	r.sftp.Close()
	return r.conn.Close()
}

// Target is where r is connected.
func (r *Remote) Target() Target { return r.target }

func (r *Remote) path(name string) string { return path.Join(r.target.Dir, name) }

// Put writes name atomically: the bytes go to a temporary name, are synced,
// and only then renamed over name. A connection lost mid-way leaves name as
// it was (and a stray temporary file, which Prune removes later).
func (r *Remote) Put(ctx context.Context, name string, src io.Reader) error {
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := r.path(fmt.Sprintf(".%s.tmp-%s", name, hex.EncodeToString(rnd[:])))
	f, err := r.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("%s: create %s: %w", r.target, tmp, err)
	}
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		r.sftp.Remove(tmp)
		return fmt.Errorf("%s: upload %s: %w", r.target, name, err)
	}
	// fsync@openssh.com: the data is on the server's disk before the rename
	// makes it the snapshot. Servers without the extension skip it.
	if err := f.Sync(); err != nil && !errors.Is(err, sftp.ErrSSHFxOpUnsupported) {
		f.Close()
		r.sftp.Remove(tmp)
		return fmt.Errorf("%s: sync %s: %w", r.target, name, err)
	}
	if err := f.Close(); err != nil {
		r.sftp.Remove(tmp)
		return fmt.Errorf("%s: upload %s: %w", r.target, name, err)
	}
	if err := r.sftp.PosixRename(tmp, r.path(name)); err != nil {
		r.sftp.Remove(tmp)
		return fmt.Errorf("%s: rename into %s: %w", r.target, name, err)
	}
	return nil
}

// Get copies name to w.
func (r *Remote) Get(ctx context.Context, name string, w io.Writer) error {
	f, err := r.sftp.Open(r.path(name))
	if err != nil {
		return fmt.Errorf("%s: open %s: %w", r.target, name, err)
	}
	defer f.Close()
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("%s: download %s: %w", r.target, name, err)
	}
	return nil
}

// RemoteFile is one file of the target directory.
type RemoteFile struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Files lists the target directory, sorted by name.
func (r *Remote) Files(ctx context.Context) ([]RemoteFile, error) {
	fis, err := r.sftp.ReadDir(r.target.Dir)
	if err != nil {
		return nil, fmt.Errorf("%s: list: %w", r.target, err)
	}
	var out []RemoteFile
	for _, fi := range fis {
		if fi.Mode().IsRegular() {
			out = append(out, RemoteFile{Name: fi.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes name.
func (r *Remote) Remove(ctx context.Context, name string) error {
	if err := r.sftp.Remove(r.path(name)); err != nil {
		return fmt.Errorf("%s: remove %s: %w", r.target, name, err)
	}
	return nil
}

// exists reports whether name is there.
func (r *Remote) exists(name string) (bool, error) {
	_, err := r.sftp.Stat(r.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
