package initramfs_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/metal-dev/metal/images/agent"
	"github.com/metal-dev/metal/images/initramfs"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// cloudKernel unpacks Debian's cloud kernel package (modules included)
// into the test cache, as `metal images build-agent` does with
// linux-image-amd64.
func cloudKernel(t *testing.T) string {
	t.Helper()
	testenv.Integration(t, "a Debian kernel package (apt-get download)")
	root, err := initramfs.FetchPackage(context.Background(), bootkit.KernelMeta, bootkit.KernelPackages())
	if err != nil {
		t.Skipf("no Debian kernel package: %v", err)
	}
	return root
}

// unpack reads a gzip'd newc archive into name → content.
func unpack(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		out[h.Name] = b
	}
}

func TestBuildAgent(t *testing.T) {
	root := cloudKernel(t)
	out := filepath.Join(t.TempDir(), "agent.cpio.gz")
	res, err := initramfs.BuildAgent(context.Background(), initramfs.Options{
		Binary: bootkit.Busybox, KernelDir: root, Out: out,
		Modules: []string{"virtio_net", "virtio_blk", "virtio_pci", "vfat", "not_a_module"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(res.Kernel), "vmlinuz-") || res.Release == "" {
		t.Errorf("result %+v: want the package's vmlinuz and release", res)
	}
	files := unpack(t, out)
	bb, _ := os.ReadFile(bootkit.Busybox)
	if !bytes.Equal(files["init"], bb) {
		t.Errorf("/init is not the agent binary")
	}
	dir := "lib/modules/" + res.Release + "/"
	deps, err := agent.ParseModulesDep(bytes.NewReader(files[dir+"modules.dep"]))
	if err != nil {
		t.Fatal(err)
	}
	order, err := agent.LoadOrder(deps)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range order {
		pos[filepath.Base(m)] = i
		if len(files[dir+m]) == 0 {
			t.Errorf("modules.dep lists %s, which is not in the archive", m)
		}
	}
	// virtio_net needs virtio and virtio_ring (and net_failover); each
	// dependency comes before what needs it.
	for mod, needs := range map[string][]string{
		"virtio_net.ko": {"virtio.ko", "virtio_ring.ko", "net_failover.ko", "failover.ko"},
		"virtio_blk.ko": {"virtio.ko", "virtio_ring.ko"},
		"vfat.ko":       {"fat.ko"},
	} {
		for _, n := range needs {
			p, ok := pos[n]
			if !ok || p > pos[mod] {
				t.Errorf("%s: dependency %s missing or after it in %v", mod, n, order)
			}
		}
	}
	if got := res.Modules; len(got) != len(order) {
		t.Errorf("result lists %d modules, modules.dep %d", len(got), len(order))
	}
}

// Debian kernels after bookworm compress modules; the archive holds them
// plain, since finit_module of a compressed module needs a kernel built
// for it.
func TestCompressedModules(t *testing.T) {
	src := cloudKernel(t)
	k, err := initramfs.FindKernel(context.Background(), initramfs.Options{KernelDir: src})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	mods := filepath.Join(root, "lib/modules", k.Release)
	plain := map[string][]byte{}
	for name, comp := range map[string]string{"virtio.ko": "xz", "virtio_ring.ko": "zst", "failover.ko": "gz", "net_failover.ko": ""} {
		matches, _ := filepath.Glob(filepath.Join(k.ModulesDir, "kernel/*/*/"+name))
		matches2, _ := filepath.Glob(filepath.Join(k.ModulesDir, "kernel/*/"+name))
		matches = append(matches, matches2...)
		if len(matches) != 1 {
			t.Fatalf("%s: found %v", name, matches)
		}
		body, _ := os.ReadFile(matches[0])
		plain[name] = body
		rel, _ := filepath.Rel(k.ModulesDir, matches[0])
		dst := filepath.Join(mods, rel)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		var buf bytes.Buffer
		switch comp {
		case "xz":
			w, _ := xz.NewWriter(&buf)
			w.Write(body)
			w.Close()
		case "zst":
			w, _ := zstd.NewWriter(&buf)
			w.Write(body)
			w.Close()
		case "gz":
			w := gzip.NewWriter(&buf)
			w.Write(body)
			w.Close()
		default:
			buf.Write(body)
		}
		if comp != "" {
			dst += "." + comp
		}
		if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	os.WriteFile(filepath.Join(root, "boot", "vmlinuz-"+k.Release), []byte("kernel"), 0o644)
	out := filepath.Join(t.TempDir(), "agent.cpio.gz")
	if _, err := initramfs.BuildAgent(context.Background(), initramfs.Options{
		Binary: bootkit.Busybox, KernelDir: root, Out: out, Modules: []string{"net_failover", "virtio_ring", "virtio"},
	}); err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	for name, body := range unpack(t, out) {
		if strings.HasSuffix(name, ".ko") {
			got[filepath.Base(name)] = body
		}
	}
	if diff := cmp.Diff(plain, got); diff != "" {
		t.Errorf("modules in the archive differ from the plain ones (-want +got):\n%s", diff)
	}
}

func TestRefusesDynamicBinary(t *testing.T) {
	_, err := initramfs.BuildAgent(context.Background(), initramfs.Options{
		Binary: "/bin/ls", KernelDir: t.TempDir(), Out: filepath.Join(t.TempDir(), "x"),
	})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("dynamic binary: %v, want advice to build with CGO_ENABLED=0", err)
	}
}

func TestMissingKernel(t *testing.T) {
	_, err := initramfs.BuildAgent(context.Background(), initramfs.Options{
		Binary: bootkit.Busybox, KernelDir: t.TempDir(), Out: filepath.Join(t.TempDir(), "x"),
	})
	if err == nil || !strings.Contains(err.Error(), "--kernel-dir") {
		t.Errorf("empty kernel dir: %v, want advice", err)
	}
}
