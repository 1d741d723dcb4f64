package images_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/images/source"
	"github.com/metal-dev/metal/internal/sshdial"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
	"github.com/metal-dev/metal/site"
)

// imageServer is a real HTTP server on loopback serving one file, which can
// cut its first answers short (as a dropped connection does) and ignore
// Range headers (as some servers do). It records every request's Range.
type imageServer struct {
	*httptest.Server
	content []byte

	mu       sync.Mutex
	ranges   []string
	dropLeft int   // answers still to cut short
	dropAt   int64 // bytes of the body sent before cutting
	noRange  bool
}

func newImageServer(t *testing.T, content []byte) *imageServer {
	s := &imageServer{content: content}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *imageServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	drop := s.dropLeft > 0
	if drop {
		s.dropLeft--
	}
	noRange := s.noRange
	s.mu.Unlock()
	if noRange {
		r.Header.Del("Range")
	}
	if drop {
		// Promise the whole file, send part of it and hang up.
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", len(s.content))
		buf.Write(s.content[:s.dropAt])
		buf.Flush()
		conn.Close()
		return
	}
	http.ServeContent(w, r, "image", time.Unix(1700000000, 0), bytes.NewReader(s.content))
}

func (s *imageServer) Ranges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func openCache(t *testing.T, state string, opts images.Options) *images.Cache {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	opts.RetryWait = 10 * time.Millisecond
	c, err := images.Open(state, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func diskFile(url, sum string) images.File {
	return images.SourceFile("deb", images.KindDisk, source.Spec{URL: url, Checksum: sum})
}

// served reads f from the served tree, as the HTTP boot server would.
func served(t *testing.T, c *images.Cache, f images.File) []byte {
	t.Helper()
	b, err := os.ReadFile(c.ServedFile(f))
	if err != nil {
		t.Fatalf("served file: %v", err)
	}
	return b
}

func TestEnsureHTTPResumes(t *testing.T) {
	content := diskImage(6<<20+7, 10)
	cases := map[string]struct {
		drops      int
		partial    []byte // left by an earlier run
		noRange    bool
		wantRanges []string
	}{
		"dropped twice midway": {
			drops: 2, wantRanges: []string{"", "bytes=1048576-", "bytes=1048576-"},
		},
		"partial from an earlier run": {
			partial: content[:3<<20], wantRanges: []string{"bytes=3145728-"},
		},
		"partial of another file is started over": {
			partial: diskImage(2<<20, 11), wantRanges: []string{"bytes=2097152-", ""},
		},
		"server ignores range": {
			partial: content[:3<<20], noRange: true, wantRanges: []string{"bytes=3145728-"},
		},
		"partial is already complete": {
			partial: content, wantRanges: []string{"bytes=6291463-"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			srv := newImageServer(t, content)
			srv.dropLeft, srv.dropAt, srv.noRange = tc.drops, 1<<20, tc.noRange
			state := t.TempDir()
			f := diskFile(srv.URL+"/deb.raw", sha256Of(content))
			d, _ := images.ParseChecksum(f.Source.Checksum)
			if tc.partial != nil {
				if err := os.MkdirAll(filepath.Join(state, "images", "partial"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(state, "images", "partial", "sha256-"+d.Hex), tc.partial, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var last int64
			c := openCache(t, state, images.Options{Progress: func(_ images.File, done, total int64) { last = done }})
			blob, err := c.Ensure(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantRanges, srv.Ranges()); diff != "" {
				t.Errorf("requests' Range headers (-want +got):\n%s", diff)
			}
			if got, _ := os.ReadFile(blob); !bytes.Equal(got, content) {
				t.Fatal("blob differs from the source")
			}
			if !bytes.Equal(served(t, c, f), content) {
				t.Fatal("served file differs from the source")
			}
			if last != int64(len(content)) {
				t.Errorf("progress ended at %d, want %d", last, len(content))
			}
			if _, err := os.Stat(filepath.Join(state, "images", "partial", "sha256-"+d.Hex)); !os.IsNotExist(err) {
				t.Errorf("partial download left behind: %v", err)
			}
			if st := c.Status(f); st.State != images.StateCached || !st.Served || st.Size != int64(len(content)) {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func TestEnsureNeverServesMismatch(t *testing.T) {
	content := diskImage(2<<20, 12)
	srv := newImageServer(t, content)
	state := t.TempDir()
	c := openCache(t, state, images.Options{})
	f := diskFile(srv.URL+"/deb.raw", sha256Of([]byte("another image")))
	_, err := c.Ensure(context.Background(), f)
	if !errors.Is(err, images.ErrChecksum) || !strings.Contains(err.Error(), sha256Of(content)) {
		t.Fatalf("err = %v, want a checksum mismatch naming the download's sum", err)
	}
	if _, err := os.Stat(c.ServedFile(f)); !os.IsNotExist(err) {
		t.Errorf("a mismatched file is served: %v", err)
	}
	assertNoFiles(t, filepath.Join(state, "images", "sha256"), filepath.Join(state, "images", "partial"))
	if st := c.Status(f); st.State != images.StateMissing {
		t.Errorf("state %q, want missing", st.State)
	}
}

func assertNoFiles(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			t.Errorf("%s holds %s", d, e.Name())
		}
	}
}

func TestCorruptBlobIsFetchedAgainAndNeverServed(t *testing.T) {
	content := diskImage(1<<20, 13)
	srv := newImageServer(t, content)
	state := t.TempDir()
	f := diskFile(srv.URL+"/deb.raw", sha256Of(content))
	c := openCache(t, state, images.Options{})
	blob, err := c.Ensure(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := func() {
		t.Helper()
		b := bytes.Clone(content)
		b[100] ^= 1
		// In place, as bit rot would: the served link shares the inode.
		if err := os.Chmod(blob, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blob, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// verify finds it, and removes both the blob and what served it.
	corrupt()
	st, err := c.Verify(context.Background(), f)
	if !errors.Is(err, images.ErrChecksum) || st.State != images.StateCorrupt {
		t.Fatalf("verify: %v, %q; want a checksum mismatch", err, st.State)
	}
	if _, err := os.Stat(c.ServedFile(f)); !os.IsNotExist(err) {
		t.Fatalf("corrupt file still served: %v", err)
	}

	// A new process (another Cache) hashes blobs before first use: it
	// fetches the file again instead of serving the corrupt one.
	if _, err := c.Ensure(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	corrupt()
	c2 := openCache(t, state, images.Options{})
	if _, err := c2.Ensure(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, c2, f), content) {
		t.Fatal("served the corrupt file")
	}
	if n := len(srv.Ranges()); n != 3 {
		t.Errorf("%d downloads, want 3 (first, after verify, after corruption)", n)
	}
	st, err = c2.Verify(context.Background(), f)
	if err != nil || st.State != images.StateVerified {
		t.Fatalf("verify: %v, %q", err, st.State)
	}
}

func TestImportThenOffline(t *testing.T) {
	content := diskImage(1<<20, 14)
	dir := t.TempDir()
	file := filepath.Join(dir, "deb.raw")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	// A port nothing listens on: any attempt to fetch fails.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/deb.raw"
	l.Close()

	c := openCache(t, t.TempDir(), images.Options{Retries: 1})
	im, err := c.Import(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	if !im.New || im.SHA256.String() != sha256Of(content) || im.SHA512.String() != sha512Of(content) || im.Size != int64(len(content)) {
		t.Fatalf("imported %+v", im)
	}
	for _, sum := range []string{sha256Of(content), sha512Of(content)} {
		f := diskFile(dead, sum)
		if _, err := c.Ensure(context.Background(), f); err != nil {
			t.Fatalf("%s: %v", sum[:6], err)
		}
		if !bytes.Equal(served(t, c, f), content) {
			t.Fatal("served something else")
		}
	}
	if im, err := c.Import(context.Background(), file); err != nil || im.New {
		t.Fatalf("second import: %+v, %v", im, err)
	}
	// What was never imported is not invented.
	if _, err := c.Ensure(context.Background(), diskFile(dead, sha256Of([]byte("x")))); err == nil {
		t.Fatal("fetched from a dead server")
	}
}

func TestLocalWithoutChecksum(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel one"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := openCache(t, t.TempDir(), images.Options{SiteDir: dir})
	f := images.SourceFile("deb", images.KindKernel, source.Spec{URL: "vmlinuz"})
	if st := c.Status(f); st.State != images.StateLocal {
		t.Errorf("before: %q", st.State)
	}
	if _, err := c.Ensure(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(f); st.State != images.StateCached || st.Digest != sha256Of([]byte("kernel one")) {
		t.Errorf("after: %+v", st)
	}
	// The file changes: the next Ensure serves the new content.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel two!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ensure(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if got := served(t, c, f); string(got) != "kernel two!" {
		t.Fatalf("served %q", got)
	}
}

func TestGCKeepsReferenced(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("keep.raw", "kept image")
	write("drop.raw", "dropped image")
	write("vmlinuz", "local kernel")
	state := t.TempDir()
	c := openCache(t, state, images.Options{SiteDir: dir})
	keep := images.SourceFile("a", images.KindDisk, source.Spec{URL: "keep.raw", Checksum: sha256Of([]byte("kept image"))})
	kernel := images.SourceFile("a", images.KindKernel, source.Spec{URL: "vmlinuz"})
	drop := images.SourceFile("b", images.KindDisk, source.Spec{URL: "drop.raw", Checksum: sha256Of([]byte("dropped image"))})
	for _, f := range []images.File{keep, kernel, drop} {
		if _, err := c.Ensure(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
	// A stale partial download and an old import nobody references.
	d, _ := images.ParseChecksum(sha256Of([]byte("gone")))
	stale := filepath.Join(state, "images", "partial", "sha256-"+d.Hex)
	if err := os.WriteFile(stale, []byte("go"), 0o644); err != nil {
		t.Fatal(err)
	}
	cat := &images.Catalog{Files: []images.File{keep, kernel}}

	dry, err := c.GC(cat, true)
	if err != nil {
		t.Fatal(err)
	}
	removed, err := c.GC(cat, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(dry, removed); diff != "" {
		t.Errorf("dry run differs from the run:\n%s", diff)
	}
	var got []string
	for _, r := range removed {
		rel, _ := filepath.Rel(filepath.Join(state, "images"), r.Path)
		got = append(got, rel)
	}
	dd, _ := images.ParseChecksum(drop.Source.Checksum)
	// The local kernel was imported under both digests; the site needs
	// only its sha256.
	k512, _ := images.ParseChecksum(sha512Of([]byte("local kernel")))
	want := []string{"sha256/" + dd.Hex, "sha512/" + k512.Hex, "partial/sha256-" + d.Hex, "serve/b/drop.raw"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	for _, f := range []images.File{keep, kernel} {
		if st := c.Status(f); st.State != images.StateCached || !st.Served {
			t.Errorf("%s after gc: %+v", f.Name, st)
		}
	}
	if st := c.Status(drop); st.State != images.StateMissing {
		t.Errorf("dropped image after gc: %+v", st)
	}
}

func TestEnsureSFTP(t *testing.T) {
	srv := sshdtest.Start(t)
	content := diskImage(3<<20+5, 15)
	p := filepath.Join(srv.Dir, "deb.raw.zst")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	// sshd refuses a user whose files other users can write; the test's
	// temporary directory is the user's own.
	fetch := &source.Fetcher{SSH: sshdial.Options{KnownHosts: srv.KnownHosts, KeyFiles: []string{srv.ClientKey}, AgentSocket: "none", Timeout: 5 * time.Second}}
	t.Cleanup(func() { fetch.Close() })
	url := srv.URL("deb.raw.zst")
	f := diskFile(url, sha256Of(content))

	// A partial file from an interrupted run is resumed over SFTP too.
	state := t.TempDir()
	d, _ := images.ParseChecksum(f.Source.Checksum)
	if err := os.MkdirAll(filepath.Join(state, "images", "partial"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "images", "partial", "sha256-"+d.Hex), content[:1<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	c := openCache(t, state, images.Options{Fetcher: fetch})
	if _, err := c.Ensure(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, c, f), content) {
		t.Fatal("served file differs")
	}

	t.Run("unknown host key refused", func(t *testing.T) {
		srv.Trust(nil)
		fetch := &source.Fetcher{SSH: sshdial.Options{KnownHosts: srv.KnownHosts, KeyFiles: []string{srv.ClientKey}, AgentSocket: "none", Timeout: 5 * time.Second}}
		defer fetch.Close()
		c := openCache(t, t.TempDir(), images.Options{Fetcher: fetch, Retries: 1})
		_, err := c.Ensure(context.Background(), f)
		if !errors.Is(err, sshdial.ErrUnknownHostKey) {
			t.Fatalf("err = %v, want an unknown host key", err)
		}
	})
}

func TestCatalog(t *testing.T) {
	dir := t.TempDir()
	hcl := `
site "t" {}
image "deb" {
  kernel           = "https://mirror.example/debian/linux"
  kernel_checksum  = "sha256:` + strings.Repeat("a", 64) + `"
  initrd           = ["boot/initrd.gz", "file:///srv/extra/linux"]
  disk             = "sftp://images@store.example/debian-12.raw.zst"
  checksum         = "sha512:` + strings.Repeat("b", 128) + `"
}
image "local only" {
  disk = "disk.img.xz"
}
`
	p := filepath.Join(dir, "site.hcl")
	if err := os.WriteFile(p, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	res, diags := site.LoadFile(p, site.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	cat := daemon.Catalog(res.Site)
	type row struct{ Image, Kind, Name, Path, Format string }
	var got []row
	for _, f := range cat.Files {
		got = append(got, row{f.Image, string(f.Kind), f.Name, f.ServedPath(), f.Format})
		back, ok := cat.ByPath(f.ServedPath())
		if !ok || back.Source != f.Source {
			t.Errorf("ByPath(%s) = %+v, %v", f.ServedPath(), back, ok)
		}
	}
	want := []row{
		{"deb", "kernel", "linux", "/images/deb/linux", ""},
		{"deb", "initrd", "initrd.gz", "/images/deb/initrd.gz", ""},
		{"deb", "initrd", "initrd1-linux", "/images/deb/initrd1-linux", ""},
		{"deb", "disk", "debian-12.raw.zst", "/images/deb/debian-12.raw.zst", "zst"},
		{"local only", "disk", "disk.img.xz", "/images/local%20only/disk.img.xz", "xz"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("catalog (-want +got):\n%s", diff)
	}
	if f, ok := cat.Lookup("deb", images.KindInitrd, 1); !ok || f.Source.URL != "file:///srv/extra/linux" {
		t.Errorf("Lookup initrd 1 = %+v, %v", f, ok)
	}
	if _, ok := cat.ByPath("/images/deb/../etc/passwd"); ok {
		t.Error("ByPath resolved a path outside the catalog")
	}
}
