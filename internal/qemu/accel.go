package qemu

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/metal-dev/metal/internal/syncbuf"
)

// Accelerator modes: Auto probes KVM and falls back to TCG.
const (
	Auto = "auto"
	KVM  = "kvm"
	TCG  = "tcg"
)

// EnvDevice names the KVM device when Options.Device is empty: the lab
// and every test that starts QEMU read it. On a host without KVM,
// METAL_KVM_DEVICE=/dev/null stands in for a /dev/kvm that opens but runs
// no guest (nested, paravirtualised clouds): the probe then really starts
// QEMU under KVM, sees it fail, and falls back to TCG.
const EnvDevice = "METAL_KVM_DEVICE"

// ProbeMarker is what the probe guest prints on its serial port.
const ProbeMarker = "metal-accel-probe-ok"

// Options say how to choose an accelerator.
type Options struct {
	// Mode is Auto (the default), KVM (fail unless KVM runs a guest) or
	// TCG (no probe).
	Mode string
	// Device is the KVM device (default $METAL_KVM_DEVICE, else
	// /dev/kvm); a device that does not open means TCG without a probe.
	Device string
	// QEMU is the emulator the probe runs (default Program).
	QEMU string
	// Timeout is how long the probe guest has to print its marker
	// (default 15 s; under KVM it takes well under one).
	Timeout time.Duration
	// Kernel, when set, is a Linux kernel image (the one the VMs will
	// boot) that KVM must also run, to its root mount, before it is
	// chosen: some nested hosts run the 16-bit probe sector but stop a
	// Linux guest at its first instruction their emulator lacks ("KVM
	// internal error ... emulation failure", the VM paused for good).
	Kernel string
	Log    *slog.Logger
}

// Choice is the accelerator to run VMs under, and why.
type Choice struct {
	Accel  string `json:"accel"`  // KVM or TCG
	Reason string `json:"reason"` // one line for a log or a status page
}

// ParseMode checks an --accel value.
func ParseMode(s string) (string, error) {
	switch s {
	case "", Auto:
		return Auto, nil
	case KVM, TCG:
		return s, nil
	}
	return "", fmt.Errorf("accelerator %q: want auto, kvm or tcg", s)
}

// Choose picks the accelerator. A /dev/kvm that opens is not trusted: on
// nested, paravirtualised hosts it opens and QEMU then sits silent (the
// kernel logs kvm-pvm: INTERNAL_ERROR). KVM is chosen only when a probe
// guest booted under it shows progress on its serial port in time; Auto
// otherwise falls back to TCG and logs why.
func Choose(ctx context.Context, o Options) (Choice, error) {
	mode, err := ParseMode(o.Mode)
	if err != nil {
		return Choice{}, err
	}
	if o.Device == "" {
		o.Device = os.Getenv(EnvDevice)
	}
	if o.Device == "" {
		o.Device = "/dev/kvm"
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mode == TCG {
		c := Choice{Accel: TCG, Reason: "TCG asked for"}
		log.Info("QEMU accelerator", "accel", c.Accel, "reason", c.Reason)
		return c, nil
	}
	probeErr := func() error {
		f, err := os.OpenFile(o.Device, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("no usable KVM device: %w", err)
		}
		f.Close()
		start := time.Now()
		if err := Probe(ctx, o.QEMU, KVM, o.Timeout); err != nil {
			return fmt.Errorf("%s opens but KVM cannot run a guest: %w", o.Device, err)
		}
		log.Debug("KVM probe guest ran", "took", time.Since(start).Round(time.Millisecond))
		if o.Kernel == "" {
			return nil
		}
		start = time.Now()
		if err := ProbeKernel(ctx, o.QEMU, o.Kernel, 0); err != nil {
			return fmt.Errorf("KVM runs the probe sector but not a Linux kernel (%s): %w", filepath.Base(o.Kernel), err)
		}
		log.Debug("Linux ran under KVM to its root mount", "kernel", o.Kernel, "took", time.Since(start).Round(time.Millisecond))
		return nil
	}()
	switch {
	case probeErr == nil:
		reason := "a probe guest ran under KVM"
		if o.Kernel != "" {
			reason = "a probe guest and a Linux kernel ran under KVM"
		}
		c := Choice{Accel: KVM, Reason: reason}
		log.Info("QEMU accelerator", "accel", c.Accel, "reason", c.Reason)
		return c, nil
	case mode == KVM:
		return Choice{}, fmt.Errorf("KVM asked for, but %w", probeErr)
	case ctx.Err() != nil:
		return Choice{}, ctx.Err()
	}
	c := Choice{Accel: TCG, Reason: probeErr.Error()}
	log.Warn("QEMU accelerator: KVM unusable, falling back to TCG (slower: a netboot takes minutes, not seconds)", "accel", c.Accel, "reason", c.Reason)
	return c, nil
}

// probeBootSector is a 16-bit boot sector that prints ProbeMarker on COM1
// and then exits QEMU through its isa-debug-exit device:
//
//	xor ax,ax; mov ds,ax; cld; mov si,msg; mov dx,0x3f8
//	next: lodsb; test al,al; jz done; out dx,al; jmp next
//	done: xor al,al; out 0xf4,al; cli; hlt; jmp $-2
//	msg:  db "metal-accel-probe-ok", 10, 0
var probeBootSector = append([]byte{
	0x31, 0xc0, 0x8e, 0xd8, 0xfc, 0xbe, 0x1b, 0x7c, 0xba, 0xf8, 0x03,
	0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8,
	0x30, 0xc0, 0xe6, 0xf4, 0xfa, 0xf4, 0xeb, 0xfc,
}, ProbeMarker+"\n\x00"...)

// Probe boots a one-sector guest under accel and returns nil once it has
// printed ProbeMarker on its serial port, or an error saying what was seen
// instead: QEMU's own complaint if it exited, or silence until timeout.
// qemu is the emulator (default Program); timeout defaults to 15 s.
func Probe(ctx context.Context, qemu, accel string, timeout time.Duration) error {
	if qemu == "" {
		qemu = Program
	}
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	dir, err := os.MkdirTemp("", "metal-accel-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	img, serial := filepath.Join(dir, "boot.img"), filepath.Join(dir, "serial.log")
	sector := make([]byte, 512)
	copy(sector, probeBootSector)
	sector[510], sector[511] = 0x55, 0xaa
	if err := os.WriteFile(img, sector, 0o644); err != nil {
		return err
	}
	// SeaBIOS reads no boot sector from a disk of one sector.
	if err := os.Truncate(img, 1<<20); err != nil {
		return err
	}
	args := append(BaseArgs(accel, 16), "-no-user-config",
		"-chardev", "file,id=s0,path="+serial, "-serial", "chardev:s0",
		"-drive", "file="+img+",format=raw,if=virtio,readonly=on",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x01")
	return runProbe(ctx, qemu, args, serial, []string{ProbeMarker}, timeout, timeout, "the probe guest")
}

// kernelReached are what a Linux kernel booted without an initramfs or a
// root device prints once it has come up: it panics where it would mount
// its root (or runs the init of an initramfs built in). By then it has set
// up paging, its allocators and its CPU: what a nested KVM fails at.
var kernelReached = []string{"Unable to mount root fs", "Run /init as init process"}

// kernelQuiet is how long a probe kernel may stay silent on its console
// (a variable for tests).
var kernelQuiet = 10 * time.Second

// ProbeKernel boots the Linux kernel image under KVM, without an initramfs,
// and returns nil once it has reached its root mount (kernelReached), or
// an error saying what was seen instead: QEMU's KVM internal error, its
// exit, no console output within kernelQuiet (a kernel prints its version
// at once; the nested host of this check printed nothing, ever), or not
// reaching the root mount within timeout (default 60 s; under KVM it
// takes a second or two, under TCG three).
func ProbeKernel(ctx context.Context, qemu, kernel string, timeout time.Duration) error {
	if qemu == "" {
		qemu = Program
	}
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	if _, err := os.Stat(kernel); err != nil {
		return fmt.Errorf("probe kernel: %w", err)
	}
	dir, err := os.MkdirTemp("", "metal-accel-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	serial := filepath.Join(dir, "serial.log")
	// panic=-1 and -no-reboot: the root mount's panic ends QEMU at once.
	args := append(BaseArgs(KVM, 256), "-no-user-config", "-no-reboot",
		"-chardev", "file,id=s0,path="+serial, "-serial", "chardev:s0",
		"-kernel", kernel, "-append", "console=ttyS0 panic=-1 loglevel=4")
	return runProbe(ctx, qemu, args, serial, kernelReached, min(kernelQuiet, timeout), timeout, "the kernel")
}

// runProbe runs QEMU with args until the guest prints one of markers on
// the serial port (the file serial): nil then. It fails at once when QEMU
// reports a KVM internal error (QEMU then pauses the guest and waits
// forever), when QEMU exits first, when the guest has printed nothing
// after quiet, or after timeout.
func runProbe(ctx context.Context, qemu string, args []string, serial string, markers []string, quiet, timeout time.Duration, guest string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	var stderr syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", qemu, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	silentUntil := time.Now().Add(quiet)
	printed := false
	seen := func() bool {
		b, _ := os.ReadFile(serial)
		printed = printed || len(b) > 0
		for _, m := range markers {
			if bytes.Contains(b, []byte(m)) {
				return true
			}
		}
		return false
	}
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case werr := <-exited:
			if seen() {
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("no output from %s within %v (QEMU sat silent%s)", guest, timeout, stderrTail(stderr.String()))
			}
			return fmt.Errorf("QEMU exited (%v) before %s printed what it should%s", werr, guest, stderrTail(stderr.String()))
		case <-tick.C:
			if seen() {
				stop()
				return nil
			}
			if strings.Contains(stderr.String(), kvmInternalError) {
				stop()
				return fmt.Errorf("QEMU stopped %s%s", guest, stderrTail(stderr.String()))
			}
			if !printed && time.Now().After(silentUntil) {
				stop()
				return fmt.Errorf("no output from %s within %v (QEMU sat silent%s)", guest, quiet, stderrTail(stderr.String()))
			}
		}
	}
}

// kvmInternalError starts what QEMU prints when KVM cannot go on with a
// guest; it then pauses the guest rather than exiting.
const kvmInternalError = "KVM internal error"

func stderrTail(out string) string {
	s := strings.TrimSpace(out)
	if s == "" {
		return ""
	}
	if lines := strings.Split(s, "\n"); len(lines) > 3 {
		s = strings.Join(lines[len(lines)-3:], "\n")
	}
	return ": " + strings.ReplaceAll(s, "\n", "; ")
}
