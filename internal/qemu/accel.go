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
	Log     *slog.Logger
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
		return nil
	}()
	switch {
	case probeErr == nil:
		c := Choice{Accel: KVM, Reason: "a probe guest ran under KVM"}
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
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", qemu, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	seen := func() bool {
		b, _ := os.ReadFile(serial)
		return bytes.Contains(b, []byte(ProbeMarker))
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
				return fmt.Errorf("no output from the probe guest within %v (QEMU sat silent%s)", timeout, stderrTail(&stderr))
			}
			return fmt.Errorf("QEMU exited (%v) before the probe guest printed anything%s", werr, stderrTail(&stderr))
		case <-tick.C:
			if seen() {
				_ = cmd.Process.Kill()
				<-exited
				return nil
			}
		}
	}
}

func stderrTail(b *bytes.Buffer) string {
	s := strings.TrimSpace(b.String())
	if s == "" {
		return ""
	}
	if lines := strings.Split(s, "\n"); len(lines) > 3 {
		s = strings.Join(lines[len(lines)-3:], "\n")
	}
	return ": " + strings.ReplaceAll(s, "\n", "; ")
}
