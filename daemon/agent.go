package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/metal-dev/metal/images/initramfs"
	"github.com/metal-dev/metal/images/iso"
	"github.com/metal-dev/metal/site"
)

// Served paths of the install agent's kernel and initramfs, under the
// HTTP server's /files/ root.
const (
	agentKernelPath = "/files/agent/vmlinuz"
	agentInitrdPath = "/files/agent/initrd.img"
)

// AgentOptions choose how the install agent is built.
type AgentOptions struct {
	// Disabled builds no agent even if the site needs one (tests of the
	// netboot servers alone).
	Disabled bool
	// KernelDir is a root holding boot/vmlinuz-REL and lib/modules/REL;
	// empty: the host's Debian kernel, or linux-image-amd64 fetched with
	// apt (see images/initramfs).
	KernelDir string
	// Binary is the agent (a static metal); default this executable.
	Binary string
	// Cmdline is added to the agent's kernel command line.
	Cmdline string
	// Boot, when set, is the agent machines boot (a kernel and initrds
	// given by the operator: paths on the HTTP server or URLs), and none is
	// built.
	Boot *AgentBoot
}

// needsAgent says whether the site boots the agent: required when it
// installs disk images; wanted when it only discovers unknown machines,
// which a daemon without an agent leaves alone (with a warning).
func needsAgent(s *site.Site) (wanted, required bool) {
	for _, im := range s.Images {
		if im.Disk.URL != "" {
			return true, true
		}
	}
	return s.Settings.UnknownMachines == "discover", false
}

// agentStamp identifies what an initramfs was built from, so a restart
// reuses it instead of packing the modules again.
type agentStamp struct {
	Binary    string `json:"binary"`
	Size      int64  `json:"size"`
	ModTime   int64  `json:"mod_time"`
	KernelDir string `json:"kernel_dir"`
	Kernel    string `json:"kernel"`
}

// prepareAgent builds the install agent's initramfs into dir/agent (or
// reuses the one built from the same binary and kernel) and returns how
// machines boot it.
func (d *Daemon) prepareAgent(ctx context.Context, dir string, opts AgentOptions) (AgentBoot, error) {
	if opts.Boot != nil {
		return *opts.Boot, nil
	}
	wanted, required := needsAgent(d.site)
	if opts.Disabled || !wanted {
		return AgentBoot{}, nil
	}
	boot, err := d.buildAgent(ctx, dir, opts)
	if err != nil && !required {
		d.log.Warn("no install agent: unknown machines will not be discovered", "err", err)
		return AgentBoot{}, nil
	}
	return boot, err
}

func (d *Daemon) buildAgent(ctx context.Context, dir string, opts AgentOptions) (AgentBoot, error) {
	bin := opts.Binary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return AgentBoot{}, fmt.Errorf("install agent: find this executable: %w", err)
		}
		bin = exe
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return AgentBoot{}, fmt.Errorf("install agent: %w", err)
	}
	agentDir := filepath.Join(dir, "agent")
	if err := os.MkdirAll(agentDir, 0o755); err != nil {
		return AgentBoot{}, fmt.Errorf("install agent: %w", err)
	}
	kernelOut := filepath.Join(agentDir, "vmlinuz")
	initrdOut := filepath.Join(agentDir, "initrd.img")
	stampPath := filepath.Join(agentDir, "stamp.json")
	want := agentStamp{Binary: bin, Size: fi.Size(), ModTime: fi.ModTime().UnixNano(), KernelDir: opts.KernelDir}

	var have agentStamp
	if b, err := os.ReadFile(stampPath); err == nil && json.Unmarshal(b, &have) == nil {
		want.Kernel = have.Kernel
		if have == want && fileExists(kernelOut) && fileExists(initrdOut) {
			d.log.Info("install agent up to date", "initrd", initrdOut)
			return d.agentBoot(opts), nil
		}
	}
	d.log.Info("building the install agent's initramfs (once per binary and kernel)", "binary", bin)
	res, err := initramfs.BuildAgent(ctx, initramfs.Options{
		Binary: bin, KernelDir: opts.KernelDir, Out: initrdOut + ".new", Logger: d.log,
	})
	if err != nil {
		return AgentBoot{}, fmt.Errorf("the site installs disk images or discovers machines, which needs the install agent, "+
			"and it could not be built: %w (build metal with CGO_ENABLED=0, as `make build` does)", err)
	}
	if err := copyFile(res.Kernel, kernelOut); err != nil {
		return AgentBoot{}, fmt.Errorf("install agent kernel: %w", err)
	}
	if err := os.Rename(res.Initrd, initrdOut); err != nil {
		return AgentBoot{}, fmt.Errorf("install agent: %w", err)
	}
	want.Kernel = res.Kernel
	if b, err := json.Marshal(want); err == nil {
		if err := os.WriteFile(stampPath, b, 0o644); err != nil {
			d.log.Warn("install agent stamp", "err", err)
		}
	}
	return d.agentBoot(opts), nil
}

func (d *Daemon) agentBoot(opts AgentOptions) AgentBoot {
	// The last console is /dev/console: the serial port, where labs and
	// remote consoles read what the agent prints. no_timer_check: a
	// virtual machine whose host is busy (QEMU TCG under a loaded CI)
	// fails the kernel's IO-APIC timer check and panics at boot.
	// softlockup_panic and panic: a kernel stuck in a driver restarts
	// instead of holding the machine in the agent forever; it then boots
	// what metal serves it.
	cmdline := func(base string) string {
		c := "console=tty0 console=ttyS0,115200 no_timer_check softlockup_panic=1 panic=10"
		if agentIPv4(base) {
			// The agent reaches metal over IPv4. Without IPv6 the kernel
			// sends nothing of its own (no DAD, no MLD reports) beside
			// the agent.
			c += " ipv6.disable=1"
		}
		c += " metal.url=" + base
		if opts.Cmdline != "" {
			c += " " + opts.Cmdline
		}
		return c
	}
	ab := AgentBoot{Kernel: agentKernelPath, Initrds: []string{agentInitrdPath}, Cmdline: cmdline(d.BaseURL)}
	if d.baseURL6 != "" {
		ab.Cmdline6, ab.BaseURL6 = cmdline(d.baseURL6), d.baseURL6
	}
	return ab
}

// agentIPv4 says whether the agent reaches metal at base over IPv4.
func agentIPv4(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(u.Hostname())
	return err == nil && a.Unmap().Is4()
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// copyFile copies src to dst through a temporary name, so a crash never
// leaves a half-written kernel that would be served.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".new"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}

// BootMedia builds the boot CD of a machine with boot = "virtual-media"
// (apply.MediaFunc): the agent this daemon built, booted with cmdline,
// under /files/media/ for the machine's BMC to fetch.
func (d *Daemon) BootMedia(ctx context.Context, machine, cmdline string) (string, error) {
	files := filepath.Join(d.StateDir, "files")
	kernel, err := servedFile(files, d.Agent.Kernel)
	if err != nil {
		return "", err
	}
	var initrds []string
	for _, p := range d.Agent.Initrds {
		f, err := servedFile(files, p)
		if err != nil {
			return "", err
		}
		initrds = append(initrds, f)
	}
	tools, err := iso.FindTools()
	if err != nil {
		return "", err
	}
	m := iso.Media{Tools: tools, Dir: filepath.Join(files, "media"), URL: d.BaseURL + "/files/media",
		Kernel: kernel, Initrds: initrds}
	return m.Build(ctx, machine, cmdline)
}

// servedFile is the file under files that the HTTP server serves at p
// (/files/...): an agent given as a URL cannot be put on a CD here.
func servedFile(files, p string) (string, error) {
	rel, ok := strings.CutPrefix(p, "/files/")
	if !ok || rel == "" || strings.Contains(rel, "..") {
		return "", fmt.Errorf("the install agent's file %q is not one metal serves from its state directory, so it cannot go on a boot CD; let metal build the agent", p)
	}
	return filepath.Join(files, filepath.FromSlash(rel)), nil
}
