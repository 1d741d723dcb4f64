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
	conn, err := sshdial.Dial(ctx, sshdial.Server{Name: t.String(), User: t.User, Host: t.Host, Port: t.Port}, opts)
	if err != nil {
		return nil, err
	}
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
