package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/google/go-cmp/cmp"
)

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// imagesSite writes a site whose image "deb" has a local kernel without a
// checksum and a disk on a real HTTP server on loopback, and whose image
// "airgap" has a disk on a server that is gone.
func imagesSite(t *testing.T, dir, diskURL, diskSum, airgapSum string) string {
	t.Helper()
	p := filepath.Join(dir, "site.hcl")
	src := `site "t" {}
image "deb" {
  kernel   = "vmlinuz"
  disk     = "` + diskURL + `"
  checksum = "` + diskSum + `"
}
`
	if airgapSum != "" {
		src += `image "airgap" {
  disk     = "http://127.0.0.1:1/airgap.raw.zst"
  checksum = "` + airgapSum + `"
}
`
	}
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func imageRows(t *testing.T, stdout string) map[string]view.FileRow {
	t.Helper()
	var rows []view.FileRow
	if err := json.Unmarshal([]byte(stdout), &rows); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	out := map[string]view.FileRow{}
	for _, r := range rows {
		out[r.Image+" "+r.Kind] = r
	}
	return out
}

func states(rows map[string]view.FileRow) map[string]string {
	out := map[string]string{}
	for k, r := range rows {
		out[k] = r.State
	}
	return out
}

func TestImagesVerbs(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	disk := bytes.Repeat([]byte("a disk image "), 300000)
	kernel := []byte("a kernel")
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "deb.raw", time.Time{}, bytes.NewReader(disk))
	}))
	defer srv.Close()
	airgap := []byte("carried in on a USB stick")
	siteFile := imagesSite(t, dir, srv.URL+"/deb.raw", sumOf(disk), sumOf(airgap))
	common := []string{"--site", siteFile, "--state-dir", state}
	run := func(wantCode int, args ...string) string {
		t.Helper()
		code, stdout, stderr := metal(t, nil, append(append([]string{"images"}, args...), common...)...)
		if code != wantCode {
			t.Fatalf("metal images %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, stdout, stderr)
		}
		return stdout
	}

	got := states(imageRows(t, run(0, "list", "--json")))
	want := map[string]string{"deb kernel": "local", "deb disk": "missing", "airgap disk": "missing"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("list before fetch (-want +got):\n%s", d)
	}

	// The air-gapped image cannot be fetched: fetch fails for it alone.
	out := run(1, "fetch", "--retries", "0")
	if !strings.Contains(out, "2 of 3 files ready") || !strings.Contains(out, "airgap") {
		t.Errorf("fetch output:\n%s", out)
	}
	out = run(0, "import", writeImageFile(t, dir, "usb.raw.zst", airgap))
	if !strings.Contains(out, "serves airgap disk") {
		t.Errorf("import output:\n%s", out)
	}
	rows := imageRows(t, run(0, "fetch", "--json"))
	want = map[string]string{"deb kernel": "cached", "deb disk": "cached", "airgap disk": "cached"}
	if d := cmp.Diff(want, states(rows)); d != "" {
		t.Errorf("fetch after import (-want +got):\n%s", d)
	}
	for k, r := range rows {
		b, err := os.ReadFile(filepath.Join(state, "images", "serve", r.Image, r.Name))
		if err != nil || !r.Served {
			t.Fatalf("%s not served: %v", k, err)
		}
		wantContent := map[string][]byte{"deb kernel": kernel, "deb disk": disk, "airgap disk": airgap}[k]
		if !bytes.Equal(b, wantContent) {
			t.Errorf("%s: served content differs", k)
		}
	}
	if out := run(0, "list"); !strings.Contains(out, "IMAGE") || !strings.Contains(out, "3.7 MiB") {
		t.Errorf("list table:\n%s", out)
	}

	// Corrupt the disk in the cache: verify finds it and fails; fetch heals.
	blob := rows["deb disk"].Blob
	if err := os.Chmod(blob, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blob, append([]byte("X"), disk[1:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	got = states(imageRows(t, run(1, "verify", "--json")))
	want = map[string]string{"deb kernel": "verified", "deb disk": "corrupt", "airgap disk": "verified"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("verify of a corrupt cache (-want +got):\n%s", d)
	}
	run(0, "fetch", "deb")
	run(0, "verify")

	// Drop the air-gapped image from the site: gc removes its file only.
	imagesSite(t, dir, srv.URL+"/deb.raw", sumOf(disk), "")
	out = run(0, "gc", "--dry-run")
	if !strings.Contains(out, "would remove") || !strings.Contains(out, "serve/airgap/airgap.raw.zst") {
		t.Errorf("gc --dry-run:\n%s", out)
	}
	run(0, "gc")
	got = states(imageRows(t, run(0, "verify", "--json")))
	want = map[string]string{"deb kernel": "verified", "deb disk": "verified"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("after gc (-want +got):\n%s", d)
	}
	if out := run(0, "gc"); !strings.Contains(out, "removed 0 files") {
		t.Errorf("second gc:\n%s", out)
	}
}

func TestImagesFetchMismatch(t *testing.T) {
	dir := t.TempDir()
	writeImageFile(t, dir, "vmlinuz", []byte("k"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "deb.raw", time.Time{}, strings.NewReader("not the image the site means"))
	}))
	defer srv.Close()
	siteFile := imagesSite(t, dir, srv.URL+"/deb.raw", sumOf([]byte("the image")), "")
	code, stdout, stderr := metal(t, nil, "images", "fetch", "--site", siteFile, "--state-dir", filepath.Join(dir, "state"))
	if code != 1 || !strings.Contains(stdout, "checksum mismatch") || !strings.Contains(stdout, sumOf([]byte("the image"))) {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "images", "serve", "deb", "deb.raw")); !os.IsNotExist(err) {
		t.Errorf("a mismatched image is served: %v", err)
	}
	code, _, stderr = metal(t, nil, "images", "fetch", "--site", siteFile, "nosuch")
	if code != 2 || !strings.Contains(stderr, `no image "nosuch"`) {
		t.Errorf("unknown image: exit %d, %s", code, stderr)
	}
}

func writeImageFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
