// Package initramfs builds the install agent's initramfs: metal's own
// static binary as /init, and the NIC, disk and filesystem modules of the
// Debian kernel the agent boots, with a modules.dep the agent loads them
// by. It is a Go cpio writer, not a shell script around cpio(1).
//
// The kernel comes from, in order: Options.KernelDir (an unpacked kernel
// package, or "/"), the host's own Debian kernel (linux-image-amd64
// installs /boot/vmlinuz-REL and /lib/modules/REL), or the package fetched
// with `apt-get download` and unpacked with `dpkg-deb -x` into a cache.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultModules are the drivers the agent needs on common servers and
// VMs: NICs, disk controllers, and the filesystems the cloud-init seed is
// written to. Names the kernel has built in are skipped.
var DefaultModules = []string{
	// NICs
	"virtio_net", "virtio_pci", "e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", "ice",
	"bnxt_en", "tg3", "r8169", "vmxnet3", "mlx4_en", "mlx5_core",
	// disks
	"virtio_blk", "virtio_scsi", "ahci", "ata_piix", "nvme", "sd_mod", "megaraid_sas",
	"mpt3sas", "hpsa", "smartpqi", "vmw_pvscsi",
	// entropy: the DHCP client and TLS wait for the kernel's random pool,
	// which a VM without a hardware RNG fills slowly
	"virtio_rng",
	// filesystems for the seed
	"ext4", "xfs", "btrfs", "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8",
}

// Options say what to build.
type Options struct {
	// Binary is the agent: metal's executable (os.Executable). It must be
	// statically linked (CGO_ENABLED=0): an initramfs has no C library.
	Binary string
	// KernelDir is a root holding boot/vmlinuz-REL and lib/modules/REL.
	// Empty: the host's kernel if it is a Debian package's, else Package
	// fetched with apt into CacheDir.
	KernelDir string
	// KernelRelease picks one release when several are installed.
	KernelRelease string
	// ModulesDir overrides where the modules are (default
	// KernelDir/lib/modules/REL).
	ModulesDir string
	// Package is the Debian metapackage fetched when no kernel is at
	// hand (default linux-image-amd64).
	Package string
	// CacheDir keeps fetched kernel packages (default
	// /var/cache/metal/kernel).
	CacheDir string
	// Modules to include with their dependencies (default DefaultModules).
	Modules []string
	// Out is the initramfs written (gzip-compressed newc cpio).
	Out    string
	Logger *slog.Logger
}

// Result says where the pieces are, for the server to serve.
type Result struct {
	Initrd  string
	Kernel  string
	Release string
	// Modules are the module paths packed, in load order.
	Modules []string
}

// BuildAgent writes the agent's initramfs to opts.Out and returns it with
// the kernel it is for.
func BuildAgent(ctx context.Context, opts Options) (Result, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Out == "" {
		return Result{}, errors.New("initramfs: no output file")
	}
	if opts.Binary == "" {
		return Result{}, errors.New("initramfs: no agent binary")
	}
	// The binary (metal itself, some 50 MiB) is copied into the archive
	// from the file, not read into memory first: read whole, it doubled
	// the peak memory of a daemon's first start (build-agent: 135 MB
	// against 71-78 MB).
	bin, err := os.Open(opts.Binary)
	if err != nil {
		return Result{}, fmt.Errorf("initramfs: agent binary: %w", err)
	}
	defer bin.Close()
	binInfo, err := bin.Stat()
	if err != nil {
		return Result{}, fmt.Errorf("initramfs: agent binary: %w", err)
	}
	if err := checkStatic(bin); err != nil {
		return Result{}, fmt.Errorf("initramfs: %s: %w", opts.Binary, err)
	}
	k, err := FindKernel(ctx, opts)
	if err != nil {
		return Result{}, err
	}
	modDir := opts.ModulesDir
	if modDir == "" {
		modDir = k.ModulesDir
	}
	wanted := opts.Modules
	if wanted == nil {
		wanted = DefaultModules
	}
	mods, err := collect(modDir, wanted, opts.Logger)
	if err != nil {
		return Result{}, err
	}
	res := Result{Initrd: opts.Out, Kernel: k.Vmlinuz, Release: k.Release}
	for _, m := range mods {
		res.Modules = append(res.Modules, m.rel)
	}
	if err := write(opts.Out, io.NewSectionReader(bin, 0, binInfo.Size()), k.Release, mods); err != nil {
		return Result{}, err
	}
	opts.Logger.Info("agent initramfs built", "out", opts.Out, "kernel", k.Vmlinuz, "release", k.Release, "modules", len(mods))
	return res, nil
}

// checkStatic refuses a dynamically linked binary (one with an ELF
// interpreter), which could not start in an initramfs.
func checkStatic(r io.ReaderAt) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked: build metal with CGO_ENABLED=0 (make build does)")
		}
	}
	return nil
}

// module is one kernel module to pack: its path relative to the modules
// directory (without a compression suffix), its content, and its
// dependencies' paths.
type module struct {
	rel  string
	body []byte
	deps []string
}

// index maps module names (with - and _ treated alike) to their paths
// under dir/kernel, compressed or not.
func index(dir string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if name, ok := moduleName(d.Name()); ok {
			rel, _ := filepath.Rel(dir, p)
			idx[name] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("initramfs: kernel modules in %s: %w (install linux-image-amd64, or point --kernel-dir at an unpacked kernel package)", dir, err)
	}
	return idx, nil
}

func moduleName(file string) (string, bool) {
	for _, suf := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if base, ok := strings.CutSuffix(file, suf); ok {
			return strings.ReplaceAll(base, "-", "_"), true
		}
	}
	return "", false
}

// builtin reads modules.builtin: modules compiled into the kernel, which
// need no file.
func builtin(dir string) map[string]bool {
	out := map[string]bool{}
	b, _ := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := moduleName(filepath.Base(strings.TrimSpace(line))); ok {
			out[name] = true
		}
	}
	return out
}

// collect reads the wanted modules and everything they depend on (from
// each module's own .modinfo "depends=", so no depmod run is needed),
// decompressed, sorted by path.
func collect(dir string, wanted []string, log *slog.Logger) ([]module, error) {
	idx, err := index(dir)
	if err != nil {
		return nil, err
	}
	built := builtin(dir)
	got := map[string]*module{}
	var add func(name, from string) error
	add = func(name, from string) error {
		name = strings.ReplaceAll(name, "-", "_")
		rel, ok := idx[name]
		if !ok {
			if !built[name] {
				if from != "" {
					return fmt.Errorf("initramfs: module %s needs %s, which %s does not have", from, name, dir)
				}
				log.Debug("module not in this kernel; skipped", "module", name)
			}
			return nil
		}
		plain := stripCompression(rel)
		if _, ok := got[plain]; ok {
			return nil
		}
		body, err := readModule(filepath.Join(dir, rel))
		if err != nil {
			return fmt.Errorf("initramfs: %s: %w", rel, err)
		}
		m := &module{rel: plain, body: body}
		got[plain] = m
		deps, err := modinfoDepends(body)
		if err != nil {
			return fmt.Errorf("initramfs: %s: %w", rel, err)
		}
		for _, d := range deps {
			if err := add(d, name); err != nil {
				return err
			}
			if drel, ok := idx[strings.ReplaceAll(d, "-", "_")]; ok {
				m.deps = append(m.deps, stripCompression(drel))
			}
		}
		return nil
	}
	for _, name := range wanted {
		if err := add(name, ""); err != nil {
			return nil, err
		}
	}
	out := make([]module, 0, len(got))
	for _, m := range got {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rel < out[j].rel })
	return out, nil
}

func stripCompression(rel string) string {
	for _, suf := range []string{".xz", ".zst", ".gz"} {
		if s, ok := strings.CutSuffix(rel, suf); ok {
			return s
		}
	}
	return rel
}

// readModule returns a module file's content, decompressed: the agent
// loads plain modules with finit_module, which every kernel accepts.
func readModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		r = xr
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		r = gr
	}
	return io.ReadAll(r)
}

// modinfoDepends reads the "depends=" entry of a module's .modinfo
// section (NUL-separated key=value strings).
func modinfoDepends(body []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("not a kernel module: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, d)
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// write packs the initramfs into out (through a temporary file, so a
// failed build never leaves half an initramfs where a server serves it).
func write(out string, bin *io.SectionReader, release string, mods []module) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".initramfs-*")
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	zw, err := gzip.NewWriterLevel(tmp, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := cpio.NewWriter(zw)
	a := &archive{w: cw, dirs: map[string]bool{}}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc"} {
		a.dir(d)
	}
	a.copy("init", 0o755, bin, bin.Size())
	modRoot := "lib/modules/" + release
	a.dir(modRoot)
	var dep strings.Builder
	for _, m := range mods {
		a.file(modRoot+"/"+m.rel, 0o644, m.body)
		fmt.Fprintf(&dep, "%s:", m.rel)
		for _, d := range m.deps {
			fmt.Fprintf(&dep, " %s", d)
		}
		dep.WriteString("\n")
	}
	a.file(modRoot+"/modules.dep", 0o644, []byte(dep.String()))
	if a.err == nil {
		a.err = cw.Close()
	}
	if a.err == nil {
		a.err = zw.Close()
	}
	if a.err == nil {
		a.err = tmp.Close()
	} else {
		tmp.Close()
	}
	if a.err != nil {
		return fmt.Errorf("initramfs: write %s: %w", out, a.err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// archive writes cpio entries, creating parent directories first, and
// keeps the first error.
type archive struct {
	w     *cpio.Writer
	dirs  map[string]bool
	inode int64
	err   error
}

func (a *archive) header(name string, mode cpio.FileMode, size int64) {
	if a.err != nil {
		return
	}
	a.inode++
	links := 1
	if mode.IsDir() {
		links = 2
	}
	a.err = a.w.WriteHeader(&cpio.Header{Name: name, Mode: mode, Size: size, Links: links,
		ModTime: time.Unix(0, 0), Inode: a.inode})
}

func (a *archive) dir(name string) {
	if a.dirs[name] || name == "." || name == "" {
		return
	}
	a.dir(filepath.Dir(name))
	a.dirs[name] = true
	a.header(name, cpio.TypeDir|0o755, 0)
}

func (a *archive) file(name string, perm cpio.FileMode, body []byte) {
	a.copy(name, perm, bytes.NewReader(body), int64(len(body)))
}

// copy writes an entry of size bytes read from r.
func (a *archive) copy(name string, perm cpio.FileMode, r io.Reader, size int64) {
	a.dir(filepath.Dir(name))
	a.header(name, cpio.TypeReg|perm, size)
	if a.err != nil {
		return
	}
	n, err := io.Copy(a.w, io.LimitReader(r, size))
	switch {
	case err != nil:
		a.err = err
	case n < size:
		a.err = fmt.Errorf("%s: %d bytes of %d: %w", name, n, size, io.ErrUnexpectedEOF)
	}
}

// Module is a kernel module's file, decompressed: what insmod loads.
type Module struct {
	// Path is relative to the modules directory ("kernel/drivers/...ko").
	Path string
	Body []byte
}

// LoadOrder returns the wanted modules of the kernel whose modules are in
// dir, with what they depend on, each after its dependencies, so that
// loading them in turn (busybox insmod, no modprobe) succeeds. Modules the
// kernel has built in are left out.
func LoadOrder(dir string, wanted []string) ([]Module, error) {
	mods, err := collect(dir, wanted, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	byRel := make(map[string]module, len(mods))
	for _, m := range mods {
		byRel[m.rel] = m
	}
	var out []Module
	done := map[string]bool{}
	var visit func(rel string)
	visit = func(rel string) {
		if done[rel] {
			return
		}
		done[rel] = true
		m := byRel[rel]
		for _, d := range m.deps {
			visit(d)
		}
		out = append(out, Module{Path: m.rel, Body: m.body})
	}
	for _, m := range mods {
		visit(m.rel)
	}
	return out, nil
}
