package debpkg

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDepends(t *testing.T) {
	tests := map[string]struct {
		out  string
		want string
		ok   bool
	}{
		"cloud metapackage": {
			out:  "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-27-cloud-amd64\n",
			want: "linux-image-6.1.0-27-cloud-amd64", ok: true,
		},
		"recommends and suggests around it": {
			out: "linux-image-amd64\n  Recommends: firmware-linux-free\n" +
				"  Depends: linux-image-6.12.9+deb13-amd64\n  Suggests: <debian-kernel-handbook>\n",
			want: "linux-image-6.12.9+deb13-amd64", ok: true,
		},
		"an alternative is not the dependency": {
			out: "linux-image-amd64\n |Depends: linux-image-6.1.0-9-amd64\n" +
				"  Depends: linux-image-6.1.0-27-amd64\n",
			want: "linux-image-6.1.0-27-amd64", ok: true,
		},
		"another metapackage names no version": {
			out: "linux-image-cloud-amd64\n  Depends: linux-image-amd64\n",
		},
		"virtual package": {
			out: "<linux-image>\n",
		},
		"nothing": {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := parseDepends([]byte(tc.out))
			if diff := cmp.Diff([2]any{tc.want, tc.ok}, [2]any{got, ok}); diff != "" {
				t.Errorf("parseDepends (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCompareVersions(t *testing.T) {
	tests := map[string]struct {
		a, b string
		want int
	}{
		"longer number is larger":  {"linux-image-6.1.0-27-amd64", "linux-image-6.1.0-9-amd64", 1},
		"smaller number":           {"linux-image-6.1.0-9-amd64", "linux-image-6.1.0-27-amd64", -1},
		"major version first":      {"linux-image-6.12.9-amd64", "linux-image-6.1.0-57-amd64", 1},
		"equal":                    {"linux-image-6.1.0-27-amd64", "linux-image-6.1.0-27-amd64", 0},
		"leading zeros are values": {"linux-image-6.01", "linux-image-6.1", 0},
		"prefix is smaller":        {"linux-image-6.1", "linux-image-6.1.0", -1},
		"letters as letters":       {"linux-image-6.1.0-27-amd64", "linux-image-6.1.0-27-cloud-amd64", -1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := compareVersions(tc.a, tc.b); got != tc.want {
				t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

// TestFetchKernelOffline covers what FetchKernel does when apt cannot say
// which version to fetch, and a versioned name already unpacked: neither
// touches the network. Downloading and unpacking with the real apt is
// exercised by the QEMU tests (testkernel, initramfs).
func TestFetchKernelOffline(t *testing.T) {
	// failingAptCache is apt-cache on a host without package lists.
	const failingAptCache = "#!/bin/sh\necho 'E: No packages found' >&2\nexit 100\n"
	tests := map[string]struct {
		meta     string
		aptCache string // the apt-cache on PATH; none if ""
		cached   map[string]bool
		want     string // the root, relative to the cache
		wantErr  string
	}{
		"no package lists: the newest cached version": {
			meta: "linux-image-cloud-amd64", aptCache: failingAptCache,
			cached: map[string]bool{"linux-image-6.1.0-9-cloud-amd64": true, "linux-image-6.1.0-27-cloud-amd64": true},
			want:   "linux-image-6.1.0-27-cloud-amd64",
		},
		"no apt at all: the newest cached version": {
			meta:   "linux-image-cloud-amd64",
			cached: map[string]bool{"linux-image-6.1.0-27-cloud-amd64": true, "linux-image-6.12.9-cloud-amd64": true},
			want:   "linux-image-6.12.9-cloud-amd64",
		},
		"a directory without boot/ is not a cached package": {
			meta: "linux-image-cloud-amd64", aptCache: failingAptCache,
			cached: map[string]bool{"linux-image-6.1.0-9-cloud-amd64": true, "linux-image-6.1.0-27-cloud-amd64": false},
			want:   "linux-image-6.1.0-9-cloud-amd64",
		},
		"a versioned name already unpacked needs no apt": {
			meta:   "linux-image-6.1.0-9-cloud-amd64",
			cached: map[string]bool{"linux-image-6.1.0-9-cloud-amd64": true, "linux-image-6.1.0-27-cloud-amd64": true},
			want:   "linux-image-6.1.0-9-cloud-amd64",
		},
		"no package lists, empty cache": {
			meta: "linux-image-cloud-amd64", aptCache: failingAptCache,
			wantErr: "run apt-get update",
		},
		"no apt, only an older layout's vmlinuz": {
			meta:    "linux-image-cloud-amd64",
			cached:  map[string]bool{"linux-image-6.1.0-27-cloud-amd64": false},
			wantErr: "install the Debian package apt",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			bin := t.TempDir()
			if tc.aptCache != "" {
				if err := os.WriteFile(filepath.Join(bin, "apt-cache"), []byte(tc.aptCache), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			t.Setenv("PATH", bin)
			cache := t.TempDir()
			for pkg, whole := range tc.cached {
				dir := filepath.Join(cache, pkg)
				if whole {
					dir = filepath.Join(dir, "boot")
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			root, err := FetchKernel(context.Background(), tc.meta, cache)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("FetchKernel = %q, %v; want an error saying %q", root, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(filepath.Join(cache, tc.want), root); diff != "" {
				t.Errorf("root (-want +got):\n%s", diff)
			}
		})
	}
}
