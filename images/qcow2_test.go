package images_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/images/source"
	"github.com/metal-dev/metal/internal/testenv"
)

// qemuImg runs Debian's qemu-img (qemu-utils) as an operator would.
func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	testenv.Integration(t, "qemu-img (Debian qemu-utils)")
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatalf("qemu-img not found (apt-get install qemu-utils): %v", err)
	}
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// toQcow2 converts raw into a qcow2 file with qemu-img (compressed
// clusters with -c) and returns its bytes.
func toQcow2(t *testing.T, raw []byte, extra ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	if err := os.WriteFile(in, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	qemuImg(t, append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, extra...), in, out)...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unpackServed reads the served stream as the agent does: checked against
// the checksum the cache gave and decompressed by its format.
func unpackServed(t *testing.T, c *images.Cache, f images.File, s images.Served) []byte {
	t.Helper()
	var disk bytes.Buffer
	if _, err := images.Write(context.Background(), &disk, bytes.NewReader(served(t, c, f)),
		images.WriteOptions{Format: s.Format, Checksum: s.Checksum}); err != nil {
		t.Fatalf("agent's read of the served stream: %v", err)
	}
	return disk.Bytes()
}

func TestEnsureConvertsQcow2(t *testing.T) {
	raw := diskImage(4<<20, 29)
	cases := map[string]struct {
		qemuArgs []string
		name     string // the published file's name
		format   string // as the site gives it ("" from the name)
	}{
		"qcow2":                     {name: "deb.qcow2"},
		"compressed qcow2":          {qemuArgs: []string{"-c"}, name: "deb.qcow2"},
		"qcow2 v2 (compat 0.10)":    {qemuArgs: []string{"-o", "compat=0.10"}, name: "deb.qcow2"},
		"qcow2 named .img by magic": {qemuArgs: []string{"-c"}, name: "jammy-server-cloudimg-amd64.img"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			q := toQcow2(t, raw, tc.qemuArgs...)
			srv := newImageServer(t, q)
			state := t.TempDir()
			format := tc.format
			if format == "" {
				format = images.FormatRaw
				if strings.HasSuffix(tc.name, ".qcow2") {
					format = images.FormatQcow2
				}
			}
			f := images.NewCatalog([]images.Image{{Name: "deb",
				Disk: source.Spec{URL: srv.URL + "/" + tc.name, Checksum: sha256Of(q)}, Format: format}}).Files[0]
			c := openCache(t, state, images.Options{})
			s, err := c.EnsureServed(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			if s.Format != images.FormatZst || s.Published != sha256Of(q) || s.Checksum != sha256Of(served(t, c, f)) {
				t.Errorf("served %+v; want zst with the served bytes' sha256, published %s", s, sha256Of(q))
			}
			if !bytes.Equal(unpackServed(t, c, f, s), raw) {
				t.Fatal("the converted disk differs from the raw image the qcow2 was made from")
			}
			if st := c.Status(f); st.State != images.StateCached || !st.Served {
				t.Errorf("status %+v", st)
			}

			// Converted once: another process finds the conversion and
			// neither fetches nor converts again.
			fi, _ := os.Stat(s.Path)
			requests := len(srv.Ranges())
			s2, err := openCache(t, state, images.Options{}).EnsureServed(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			fi2, _ := os.Stat(s2.Path)
			if s2 != s || !os.SameFile(fi, fi2) || !fi.ModTime().Equal(fi2.ModTime()) || len(srv.Ranges()) != requests {
				t.Errorf("second ensure: %+v (was %+v), %d requests (was %d)", s2, s, len(srv.Ranges()), requests)
			}
		})
	}
}

func TestEnsureRefusesQcow2(t *testing.T) {
	raw := diskImage(1<<20, 30)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, "overlay.qcow2")
	qemuImg(t, "create", "-f", "qcow2", "-b", base, "-F", "raw", overlay)
	withBacking, err := os.ReadFile(overlay)
	if err != nil {
		t.Fatal(err)
	}
	// The trap a backing file sets: a path on the converting machine.
	if err := os.Chmod(base, 0); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		content []byte
		format  string
		want    error
		wantMsg string
	}{
		"backing file":                {content: withBacking, format: images.FormatQcow2, want: images.ErrQcow2Refused, wantMsg: "backing file (\"" + base + "\")"},
		"backing file found by magic": {content: withBacking, format: images.FormatRaw, want: images.ErrQcow2Refused, wantMsg: "backing file"},
		"qcow2 that is not":           {content: raw, format: images.FormatQcow2, wantMsg: "does not begin with qcow2's magic"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			srv := newImageServer(t, tc.content)
			f := images.SourceFile("deb", images.KindDisk, source.Spec{URL: srv.URL + "/deb.qcow2", Checksum: sha256Of(tc.content)})
			f.Format = tc.format
			c := openCache(t, t.TempDir(), images.Options{})
			_, err := c.EnsureServed(context.Background(), f)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v; want %v saying %q", err, tc.want, tc.wantMsg)
			}
			t.Log(err)
			if _, err := os.Stat(c.ServedFile(f)); !os.IsNotExist(err) {
				t.Errorf("a refused image is served: %v", err)
			}
		})
	}
}

func TestReadQcow2Header(t *testing.T) {
	q := toQcow2(t, diskImage(1<<20, 31))
	h, err := images.ReadQcow2Header(bytes.NewReader(q))
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 3 || h.VirtualSize != 1<<20 || h.BackingFile != "" || h.Encrypted || h.ExternalData {
		t.Errorf("header %+v", h)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"raw":       make([]byte, 4096),
		"truncated": q[:40],
	} {
		if _, err := images.ReadQcow2Header(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
