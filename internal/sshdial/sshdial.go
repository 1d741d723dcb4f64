// Package sshdial opens SSH connections the way ssh(1) does for a user: keys
// from the ssh-agent and ~/.ssh/id_*, host keys checked against known_hosts,
// and an unknown or changed host key always refused. Backups (SFTP) and the
// image cache (sftp:// sources) share it so both trust servers alike.
package sshdial

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Errors of host key checking.
var (
	ErrUnknownHostKey = errors.New("unknown ssh host key")
	ErrHostKeyChanged = errors.New("ssh host key changed")
)

// Options says how to authenticate. The zero value uses the user's
// ssh-agent (SSH_AUTH_SOCK), ~/.ssh/id_ed25519, id_ecdsa, id_rsa and
// ~/.ssh/known_hosts, like ssh(1).
type Options struct {
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
	// DialContext opens the TCP connection (default net.Dialer): tests
	// dial into a network namespace with it.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger      *slog.Logger
}

// Server is who to connect to; Name (such as the URL the user wrote)
// prefixes errors.
type Server struct {
	Name string
	User string
	Host string
	Port int
}

// Dial connects and authenticates to s.
func Dial(ctx context.Context, s Server, opts Options) (*ssh.Client, error) {
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
	hostKey, algos, err := hostKeyCheck(opts.KnownHosts, s)
	if err != nil {
		return nil, err
	}
	signers, closeAgent := signers(opts)
	defer closeAgent()
	if len(signers) == 0 {
		return nil, fmt.Errorf("%s: no ssh key: no agent at SSH_AUTH_SOCK and no usable key in %s", s.Name, strings.Join(opts.KeyFiles, ", "))
	}
	cfg := &ssh.ClientConfig{
		User:              s.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback:   hostKey,
		HostKeyAlgorithms: algos,
		Timeout:           opts.Timeout,
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	nc, err := dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	// The handshake has no context; a deadline bounds it instead.
	nc.SetDeadline(time.Now().Add(opts.Timeout))
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	nc.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// hostKeyCheck builds the known_hosts callback with messages that say what
// to do, and the host key algorithms known for the host: without them the
// server may present a key type known_hosts does not list for it, which
// would look like a changed key.
func hostKeyCheck(file string, s Server) (ssh.HostKeyCallback, []string, error) {
	if _, err := os.Stat(file); err != nil {
		return nil, nil, fmt.Errorf("%s: known_hosts %s: %w (host keys are always checked; add the server's key with ssh-keyscan after verifying it)", s.Name, file, err)
	}
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, nil, fmt.Errorf("known_hosts %s: %w", file, err)
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	hostname := knownhosts.Normalize(addr)
	var algos []string
	var ke *knownhosts.KeyError
	if err := cb(addr, &net.TCPAddr{IP: net.ParseIP(s.Host), Port: s.Port}, probeKey{}); errors.As(err, &ke) {
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
				hostname, file, fp, s.Port, s.Host, file, ErrUnknownHostKey)
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

func signers(opts Options) ([]ssh.Signer, func()) {
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
