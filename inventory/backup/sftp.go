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
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/metal-dev/metal/internal/sshdial"
)

// Errors of host key checking (see internal/sshdial).
var (
	ErrUnknownHostKey = sshdial.ErrUnknownHostKey
	ErrHostKeyChanged = sshdial.ErrHostKeyChanged
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
// ~/.ssh/known_hosts, like ssh(1); an unknown or changed host key is always
// refused.
type SSHOptions = sshdial.Options

// DefaultOpTimeout bounds every SFTP operation of a Remote (see
// Remote.OpTimeout).
const DefaultOpTimeout = 30 * time.Second

// Remote is an SFTP connection to a Target's directory. Every operation
// has a deadline: one that gets no answer within OpTimeout (an upload or a
// download: no bytes moved for that long) closes the connection, which
// fails it and every other operation in flight at once, so a black-holed
// link never blocks a caller until TCP gives up (~15 min). SSH keepalives
// every OpTimeout/2 close a silent connection between operations too. The
// next operation dials again.
type Remote struct {
	target Target
	opts   SSHOptions
	log    *slog.Logger
	// OpTimeout is the deadline of one operation (DefaultOpTimeout if 0).
	OpTimeout time.Duration
	// Key signs the snapshots, heartbeats and fences written through r
	// and authenticates those read (nil: none are; see Key).
	Key *Key

	mu   sync.Mutex
	conn *ssh.Client
	sftp *sftp.Client
}

// Dial connects and authenticates to t, and creates t.Dir if needed.
func Dial(ctx context.Context, t Target, opts SSHOptions) (*Remote, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Remote{target: t, opts: opts, log: opts.Logger}
	if _, err := r.client(ctx); err != nil {
		return nil, err
	}
	if err := r.do(ctx, "create directory", func(c *sftp.Client, _ func()) error { return c.MkdirAll(t.Dir) }); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Remote) opTimeout() time.Duration {
	if r.OpTimeout > 0 {
		return r.OpTimeout
	}
	return DefaultOpTimeout
}

// client is the open connection, dialled again if the last one broke.
func (r *Remote) client(ctx context.Context) (*sftp.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sftp != nil {
		return r.sftp, nil
	}
	opts := r.opts
	if opts.Timeout <= 0 || opts.Timeout > r.opTimeout() {
		opts.Timeout = r.opTimeout()
	}
	conn, err := sshdial.Dial(ctx, sshdial.Server{Name: r.target.String(), User: r.target.User, Host: r.target.Host, Port: r.target.Port}, opts)
	if err != nil {
		return nil, err
	}
	sc, err := sftp.NewClient(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: start sftp: %w", r.target, err)
	}
	r.conn, r.sftp = conn, sc
	go r.keepalive(conn, sc)
	return sc, nil
}

// drop closes the connection sc runs on (if it is still the current one);
// the next operation dials again.
func (r *Remote) drop(sc *sftp.Client) {
	r.mu.Lock()
	if r.sftp != sc || sc == nil {
		r.mu.Unlock()
		return
	}
	conn := r.conn
	r.conn, r.sftp = nil, nil
	r.mu.Unlock()
	// The TCP connection first: sftp's Close waits for writes that a
	// black-holed link never takes.
	conn.Close()
	go sc.Close()
}

// keepalive asks the server for an answer every OpTimeout/2 and closes the
// connection when one does not come within OpTimeout.
func (r *Remote) keepalive(conn *ssh.Client, sc *sftp.Client) {
	every := r.opTimeout() / 2
	t := time.NewTicker(every)
	defer t.Stop()
	closed := make(chan struct{})
	go func() { conn.Wait(); close(closed) }()
	for {
		select {
		case <-closed:
			// The server went away: the next operation dials again.
			r.drop(sc)
			return
		case <-t.C:
		}
		answered := make(chan error, 1)
		go func() { _, _, err := conn.SendRequest("keepalive@openssh.com", true, nil); answered <- err }()
		select {
		case <-closed:
			r.drop(sc)
			return
		case err := <-answered:
			if err == nil {
				continue
			}
			r.log.Warn("ssh keepalive failed; closing the connection", "target", r.target.String(), "err", err)
		case <-time.After(r.opTimeout()):
			r.log.Warn("ssh keepalive unanswered; closing the connection", "target", r.target.String(), "timeout", r.opTimeout())
		}
		r.drop(sc)
		return
	}
}

// ErrTimeout: an SFTP operation got no answer within the Remote's
// OpTimeout; its connection was closed.
var ErrTimeout = errors.New("no answer from the SFTP server")

// do runs op with the deadline: op calls progress whenever bytes moved,
// which starts its deadline again. The deadline or ctx's end closes the
// connection, which unblocks op.
func (r *Remote) do(ctx context.Context, what string, op func(c *sftp.Client, progress func()) error) error {
	sc, err := r.client(ctx)
	if err != nil {
		return err
	}
	timeout := r.opTimeout()
	var mu sync.Mutex
	last := time.Now()
	progress := func() { mu.Lock(); last = time.Now(); mu.Unlock() }
	done := make(chan error, 1)
	go func() { done <- op(sc, progress) }()
	tick := time.NewTicker(timeout / 8)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			r.drop(sc)
			return fmt.Errorf("%s: %s: %w", r.target, what, ctx.Err())
		case <-tick.C:
			mu.Lock()
			idle := time.Since(last)
			mu.Unlock()
			if idle >= timeout {
				r.drop(sc)
				return fmt.Errorf("%s: %s: %w within %v (connection closed)", r.target, what, ErrTimeout, timeout)
			}
		}
	}
}

// Close ends the connection.
func (r *Remote) Close() error {
	r.mu.Lock()
	conn, sc := r.conn, r.sftp
	r.conn, r.sftp = nil, nil
	r.mu.Unlock()
	if sc == nil {
		return nil
	}
	err := conn.Close()
	go sc.Close()
	return err
}

// Target is where r is connected.
func (r *Remote) Target() Target { return r.target }

func (r *Remote) path(name string) string { return path.Join(r.target.Dir, name) }

// Put writes name atomically: the bytes go to a temporary name, are synced,
// and only then renamed over name. A connection lost mid-way leaves name as
// it was (and a stray temporary file, which Prune removes later).
func (r *Remote) Put(ctx context.Context, name string, src io.Reader) error {
	return r.put(ctx, name, src, false)
}

// ErrExists: Create found its name taken.
var ErrExists = errors.New("file exists")

// Create writes name like Put, but only if no file of that name exists:
// the final step is SFTP's plain rename, which OpenSSH's sftp-server
// carries out as link(2) and unlink(2), failing when the name is taken
// (posix-rename@openssh.com, which Put uses, replaces). Of two Creates of
// one name, exactly one succeeds; the other returns ErrExists.
func (r *Remote) Create(ctx context.Context, name string, src io.Reader) error {
	return r.put(ctx, name, src, true)
}

func (r *Remote) put(ctx context.Context, name string, src io.Reader, exclusive bool) error {
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := r.path(fmt.Sprintf(".%s.tmp-%s", name, hex.EncodeToString(rnd[:])))
	return r.do(ctx, "upload "+name, func(c *sftp.Client, progress func()) error {
		f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if err != nil {
			return fmt.Errorf("%s: create %s: %w", r.target, tmp, err)
		}
		progress()
		if _, err := io.Copy(f, progressReader{src, progress}); err != nil {
			f.Close()
			c.Remove(tmp)
			return fmt.Errorf("%s: upload %s: %w", r.target, name, err)
		}
		// fsync@openssh.com: the data is on the server's disk before the
		// rename makes it the file. Servers without the extension skip it.
		if err := f.Sync(); err != nil && !errors.Is(err, sftp.ErrSSHFxOpUnsupported) {
			f.Close()
			c.Remove(tmp)
			return fmt.Errorf("%s: sync %s: %w", r.target, name, err)
		}
		if err := f.Close(); err != nil {
			c.Remove(tmp)
			return fmt.Errorf("%s: upload %s: %w", r.target, name, err)
		}
		progress()
		if exclusive {
			err = c.Rename(tmp, r.path(name))
			if err != nil {
				c.Remove(tmp)
				if _, serr := c.Stat(r.path(name)); serr == nil {
					return fmt.Errorf("%s: %s: %w", r.target, name, ErrExists)
				}
				return fmt.Errorf("%s: rename into %s: %w", r.target, name, err)
			}
			return nil
		}
		if err := c.PosixRename(tmp, r.path(name)); err != nil {
			c.Remove(tmp)
			return fmt.Errorf("%s: rename into %s: %w", r.target, name, err)
		}
		return nil
	})
}

type progressReader struct {
	r        io.Reader
	progress func()
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.progress()
	}
	return n, err
}

type progressWriter struct {
	w        io.Writer
	progress func()
}

func (p progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.progress()
	return n, err
}

// Get copies name to w.
func (r *Remote) Get(ctx context.Context, name string, w io.Writer) error {
	return r.do(ctx, "download "+name, func(c *sftp.Client, progress func()) error {
		f, err := c.Open(r.path(name))
		if err != nil {
			return fmt.Errorf("%s: open %s: %w", r.target, name, err)
		}
		defer f.Close()
		if _, err := io.Copy(progressWriter{w, progress}, f); err != nil {
			return fmt.Errorf("%s: download %s: %w", r.target, name, err)
		}
		return nil
	})
}

// RemoteFile is one file of the target directory.
type RemoteFile struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Files lists the target directory, sorted by name.
func (r *Remote) Files(ctx context.Context) ([]RemoteFile, error) {
	var out []RemoteFile
	err := r.do(ctx, "list", func(c *sftp.Client, _ func()) error {
		fis, err := c.ReadDir(r.target.Dir)
		if err != nil {
			return fmt.Errorf("%s: list: %w", r.target, err)
		}
		for _, fi := range fis {
			if fi.Mode().IsRegular() {
				out = append(out, RemoteFile{Name: fi.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// Remove deletes name.
func (r *Remote) Remove(ctx context.Context, name string) error {
	return r.do(ctx, "remove "+name, func(c *sftp.Client, _ func()) error {
		if err := c.Remove(r.path(name)); err != nil {
			return fmt.Errorf("%s: remove %s: %w", r.target, name, err)
		}
		return nil
	})
}

// exists reports whether name is there.
func (r *Remote) exists(ctx context.Context, name string) (bool, error) {
	var ok bool
	err := r.do(ctx, "stat "+name, func(c *sftp.Client, _ func()) error {
		_, err := c.Stat(r.path(name))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		ok = err == nil
		return err
	})
	return ok, err
}
