// Package source opens the files a site's images name, wherever they are:
// http and https URLs, sftp:// URLs, file:// URLs and paths relative to the
// site file. Every open can start at an offset so an interrupted download
// resumes where it stopped. It knows nothing of checksums or the cache.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/metal-dev/metal/internal/sshdial"
)

// Stream is an opened source.
type Stream struct {
	io.ReadCloser
	// Offset is where the stream starts in the file: the offset asked for,
	// or 0 when the server cannot resume (the caller must start over).
	Offset int64
	// Size is the file's full size, -1 when the server does not say.
	Size int64
}

// Fetcher opens sources. Its zero value works: relative paths are relative
// to the working directory, SSH uses the user's agent, keys and known_hosts.
// Close it to end its SSH connections.
type Fetcher struct {
	// SiteDir is the directory relative paths start from (the site file's).
	SiteDir string
	// HTTP is the client for http(s) sources (default: one that gives up on
	// a silent server after 30s but not on a long download).
	HTTP *http.Client
	// SSH says how sftp:// sources authenticate.
	SSH    sshdial.Options
	Logger *slog.Logger

	mu    sync.Mutex
	conns map[string]*sftpConn
}

type sftpConn struct {
	ssh  *ssh.Client
	sftp *sftp.Client
}

// Kind names how a URL is fetched: "http", "sftp" or "file".
func Kind(rawURL string) string {
	switch {
	case strings.HasPrefix(rawURL, "http://"), strings.HasPrefix(rawURL, "https://"):
		return "http"
	case strings.HasPrefix(rawURL, "sftp://"):
		return "sftp"
	}
	return "file"
}

// LocalPath is the file a local source names: file:// URLs as they are,
// other paths relative to siteDir. It is "" for remote sources.
func LocalPath(siteDir, rawURL string) string {
	if Kind(rawURL) != "file" {
		return ""
	}
	p := strings.TrimPrefix(rawURL, "file://")
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(siteDir, p)
}

// BaseName is the last element of the URL's path ("" if it has none), the
// name a file is served under.
func BaseName(rawURL string) string {
	p := rawURL
	if Kind(rawURL) != "file" {
		if u, err := url.Parse(rawURL); err == nil {
			p = u.Path
		}
	} else {
		p = strings.TrimPrefix(p, "file://")
	}
	b := path.Base(p)
	if b == "." || b == "/" {
		return ""
	}
	return b
}

// Open opens rawURL at offset.
func (f *Fetcher) Open(ctx context.Context, rawURL string, offset int64) (*Stream, error) {
	switch Kind(rawURL) {
	case "http":
		return f.openHTTP(ctx, rawURL, offset)
	case "sftp":
		return f.openSFTP(ctx, rawURL, offset)
	}
	return openFile(LocalPath(f.SiteDir, rawURL), offset)
}

func openFile(p string, offset int64) (*Stream, error) {
	fh, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	if _, err := fh.Seek(offset, io.SeekStart); err != nil {
		fh.Close()
		return nil, err
	}
	return &Stream{ReadCloser: fh, Offset: offset, Size: fi.Size()}, nil
}

func (f *Fetcher) client() *http.Client {
	if f.HTTP != nil {
		return f.HTTP
	}
	// No overall timeout (a disk image takes minutes), but a server that
	// accepts and then says nothing is given up on.
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		// Compressed transfer would hide the file's size and offsets.
		DisableCompression: true,
	}}
}

func (f *Fetcher) openHTTP(ctx context.Context, rawURL string, offset int64) (*Stream, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := f.client().Do(req)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		// The whole file: the server ignored the range.
		return &Stream{ReadCloser: resp.Body, Offset: 0, Size: resp.ContentLength}, nil
	case http.StatusPartialContent:
		start, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			resp.Body.Close()
			return nil, fmt.Errorf("server answered range %d- with Content-Range %q", offset, resp.Header.Get("Content-Range"))
		}
		return &Stream{ReadCloser: resp.Body, Offset: offset, Size: size}, nil
	case http.StatusRequestedRangeNotSatisfiable:
		// Asking past the end: the file may be complete already (bytes */N).
		resp.Body.Close()
		if _, size, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && size == offset {
			return &Stream{ReadCloser: io.NopCloser(strings.NewReader("")), Offset: offset, Size: size}, nil
		}
		return &Stream{ReadCloser: io.NopCloser(strings.NewReader("")), Offset: 0, Size: -1}, nil
	}
	resp.Body.Close()
	// As net/http's own errors do: no password in the message.
	return nil, fmt.Errorf("GET %s: %s", req.URL.Redacted(), resp.Status)
}

// parseContentRange reads "bytes START-END/SIZE" or "bytes */SIZE"; size is
// -1 for "*".
func parseContentRange(v string) (start, size int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, total, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	size = -1
	if total != "*" {
		n, err := strconv.ParseInt(total, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		size = n
	}
	if rng == "*" {
		return -1, size, true
	}
	s, _, found := strings.Cut(rng, "-")
	n, err := strconv.ParseInt(s, 10, 64)
	if !found || err != nil {
		return 0, 0, false
	}
	return n, size, true
}

// sftpTarget splits sftp://user@host[:port]/path. As for backups, the path
// is relative to the user's home unless it starts with a second slash
// (sftp://u@h//srv/images/x.raw).
func sftpTarget(rawURL string) (sshdial.Server, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return sshdial.Server{}, "", err
	}
	if u.Hostname() == "" {
		return sshdial.Server{}, "", fmt.Errorf("%s: no host; want sftp://user@host[:port]/path", rawURL)
	}
	s := sshdial.Server{Host: u.Hostname(), Port: 22}
	if u.User != nil {
		s.User = u.User.Username()
	}
	if s.User == "" {
		if cur, err := user.Current(); err == nil {
			s.User = cur.Username
		}
	}
	if p := u.Port(); p != "" {
		if s.Port, err = strconv.Atoi(p); err != nil {
			return sshdial.Server{}, "", fmt.Errorf("%s: port %q", rawURL, p)
		}
	}
	s.Name = fmt.Sprintf("sftp://%s@%s", s.User, net.JoinHostPort(s.Host, strconv.Itoa(s.Port)))
	p := strings.TrimPrefix(u.Path, "/")
	if p == "" {
		return sshdial.Server{}, "", fmt.Errorf("%s: no file path", rawURL)
	}
	return s, p, nil
}

func (f *Fetcher) openSFTP(ctx context.Context, rawURL string, offset int64) (*Stream, error) {
	srv, p, err := sftpTarget(rawURL)
	if err != nil {
		return nil, err
	}
	c, err := f.sftpClient(ctx, srv)
	if err != nil {
		return nil, err
	}
	fh, err := c.Open(p)
	if err != nil {
		// A connection that died (server restarted) is dropped so the next
		// attempt dials again.
		f.dropConn(srv.Name, c)
		return nil, fmt.Errorf("%s: open %s: %w", srv.Name, p, err)
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: stat %s: %w", srv.Name, p, err)
	}
	if _, err := fh.Seek(offset, io.SeekStart); err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: seek %s: %w", srv.Name, p, err)
	}
	// The sftp file reads with several requests in flight (WriteTo), which
	// is what makes SFTP fast over a long path; closing it on cancel
	// unblocks a read.
	stop := context.AfterFunc(ctx, func() { fh.Close() })
	return &Stream{ReadCloser: &sftpStream{File: fh, stop: stop}, Offset: offset, Size: fi.Size()}, nil
}

type sftpStream struct {
	*sftp.File
	stop func() bool
}

func (s *sftpStream) Close() error {
	s.stop()
	return s.File.Close()
}

func (f *Fetcher) sftpClient(ctx context.Context, srv sshdial.Server) (*sftp.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[srv.Name]; ok {
		return c.sftp, nil
	}
	opts := f.SSH
	if opts.Logger == nil {
		opts.Logger = f.Logger
	}
	conn, err := sshdial.Dial(ctx, srv, opts)
	if err != nil {
		return nil, err
	}
	sc, err := sftp.NewClient(conn, sftp.UseConcurrentReads(true), sftp.MaxConcurrentRequestsPerFile(64))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: start sftp: %w", srv.Name, err)
	}
	if f.conns == nil {
		f.conns = map[string]*sftpConn{}
	}
	f.conns[srv.Name] = &sftpConn{ssh: conn, sftp: sc}
	return sc, nil
}

func (f *Fetcher) dropConn(name string, c *sftp.Client) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur, ok := f.conns[name]; ok && cur.sftp == c {
		cur.sftp.Close()
		cur.ssh.Close()
		delete(f.conns, name)
	}
}

// Close ends the SSH connections the fetcher opened.
func (f *Fetcher) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for name, c := range f.conns {
		c.sftp.Close()
		errs = append(errs, c.ssh.Close())
		delete(f.conns, name)
	}
	return errors.Join(errs...)
}

// Spec is a file as a site names it: where it is and, for a file fetched
// over the network, what it must hash to ("sha256:<hex>" or
// "sha512:<hex>"; empty if not given). The caller translates its own model
// into it, so the images know nothing of the site's language.
type Spec struct {
	URL      string
	Checksum string
	// Sensitive: the URL holds a secret (the site computed it from a
	// sensitive variable); Display hides it.
	Sensitive bool
}

// Display is the URL as metal may show it: "(sensitive)" for a sensitive
// one, and any password in it replaced by "xxxxx".
func (s Spec) Display() string {
	if s.Sensitive {
		return "(sensitive)"
	}
	if u, err := url.Parse(s.URL); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s.URL
}
