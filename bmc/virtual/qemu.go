package virtual

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// QEMUConfig describes one QEMU machine.
type QEMUConfig struct {
	Name string
	// QMPSocket is the path of the QMP Unix socket.
	QMPSocket string
	// Command is the QEMU command line (program first) used to start the
	// machine when it is off. The virtual BMC appends -qmp for QMPSocket
	// and -boot for a pending boot device, so Command must not carry them.
	// Empty means attach only: the BMC controls a QEMU started by someone
	// else and cannot start it again after a power off (it pauses instead).
	Command []string
	// CDROMDrive is the QEMU drive id of an (empty) CD drive that virtual
	// media is inserted into, e.g. "cd0" for
	// -drive if=ide,index=2,media=cdrom,id=cd0. Empty: media is attached
	// with -cdrom at the next start.
	CDROMDrive string
	// VolumeDir holds the disks of the machine's RAID volumes (one sparse
	// file each), which its QEMU gets on a virtio-scsi controller. Empty:
	// volumes are the BMC's records only.
	VolumeDir string
	// Output receives QEMU's stdout and stderr (default: discarded).
	Output io.Writer
	Log    *slog.Logger
}

// QEMU is a Machine backed by a QEMU process controlled over QMP.
type QEMU struct {
	cfg QEMUConfig
	log *slog.Logger

	mu    sync.Mutex // serialises operations on the machine
	proc  *exec.Cmd  // the QEMU this BMC started, if running
	done  chan struct{}
	boot  Boot   // pending boot override
	media string // inserted virtual media
	// volumes are the RAID volumes whose disks the machine has;
	// raidPlugged says the running QEMU has their controller.
	volumes     []Volume
	raidPlugged bool
}

var _ Machine = (*QEMU)(nil)

// NewQEMU returns a Machine for cfg. It starts nothing.
func NewQEMU(cfg QEMUConfig) (*QEMU, error) {
	if cfg.QMPSocket == "" {
		return nil, fmt.Errorf("machine %s: no qmp socket", cfg.Name)
	}
	for _, a := range cfg.Command {
		if a == "-qmp" || a == "-boot" {
			return nil, fmt.Errorf("machine %s: the qemu command must not carry %s; the virtual BMC adds it", cfg.Name, a)
		}
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &QEMU{cfg: cfg, log: log.With("machine", cfg.Name)}, nil
}

// status reports QEMU's run state, or running=false with alive=false when
// no QEMU answers on the socket.
func (m *QEMU) status(ctx context.Context) (st qmpStatus, alive bool, err error) {
	q, err := dialQMP(ctx, m.cfg.QMPSocket)
	if err != nil {
		if isNoListener(err) {
			return qmpStatus{}, false, nil
		}
		return qmpStatus{}, false, err
	}
	defer q.Close()
	if err := q.execute(ctx, "query-status", nil, &st); err != nil {
		return st, true, err
	}
	return st, true, nil
}

// isNoListener reports whether err means that no QEMU is there: no socket
// file, or a stale one.
func isNoListener(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

func (m *QEMU) PowerState(ctx context.Context) (Power, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, _, err := m.status(ctx)
	if err != nil {
		return "", err
	}
	if st.Running {
		return PowerOn, nil
	}
	// prelaunch (-S), paused (stop) and shutdown (-no-shutdown) all mean
	// the guest is not executing: the machine is off.
	return PowerOff, nil
}

func (m *QEMU) PowerOn(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.powerOn(ctx)
}

func (m *QEMU) powerOn(ctx context.Context) error {
	st, alive, err := m.status(ctx)
	if err != nil {
		return err
	}
	if !alive {
		if err := m.start(ctx); err != nil {
			return err
		}
		st.Running = false
	}
	if st.Running {
		return nil
	}
	return m.run(ctx, "cont", nil)
}

// run dials QMP and executes one command.
func (m *QEMU) run(ctx context.Context, cmd string, args any) error {
	q, err := dialQMP(ctx, m.cfg.QMPSocket)
	if err != nil {
		return err
	}
	defer q.Close()
	return q.execute(ctx, cmd, args, nil)
}

// bootArgs turns the pending boot override into QEMU's -boot option.
func (m *QEMU) bootArgs() []string {
	if m.boot.Enabled == "" || m.boot.Enabled == "Disabled" {
		return nil
	}
	dev := map[string]string{"Pxe": "n", "Hdd": "c", "Cd": "d"}[m.boot.Target]
	switch {
	case m.boot.Target == "BiosSetup":
		// SeaBIOS has no setup screen; its boot menu is the nearest thing.
		return []string{"-boot", "menu=on"}
	case dev == "":
		return nil
	case m.boot.Enabled == "Once":
		return []string{"-boot", "once=" + dev}
	default:
		return []string{"-boot", "order=" + dev}
	}
}

// start launches QEMU with the configured command line, and waits until
// its QMP socket answers. Called with m.mu held.
func (m *QEMU) start(ctx context.Context) error {
	if len(m.cfg.Command) == 0 {
		return fmt.Errorf("machine %s: qemu is not running and no qemu command is configured to start it: %w", m.cfg.Name, ErrNotConfigured)
	}
	args := append([]string{}, m.cfg.Command[1:]...)
	args = append(args, "-qmp", "unix:"+m.cfg.QMPSocket+",server=on,wait=off")
	args = append(args, m.bootArgs()...)
	uefi := pflashVars(m.cfg.Command) != ""
	cdOnce := uefi && m.media != "" && m.boot.Target == "Cd" && m.boot.Enabled == "Once"
	switch {
	case m.media == "" || m.cfg.CDROMDrive != "":
	case uefi:
		// OVMF ignores -boot: it boots in the order of the devices'
		// bootindex, so the CD is a device of its own, first when it is
		// the boot override.
		dev := "ide-cd,drive=" + mediaDrive + ",id=" + mediaDevice
		if m.boot.Target == "Cd" && m.boot.Enabled != "Disabled" {
			dev += ",bootindex=0"
		}
		args = append(args, "-drive", "if=none,media=cdrom,readonly=on,format=raw,id="+mediaDrive+",file="+mediaPath(m.media),
			"-device", dev)
	default:
		args = append(args, "-cdrom", mediaPath(m.media))
	}
	args = append(args, m.volumeArgs()...)
	m.raidPlugged = len(m.volumes) > 0
	_ = os.Remove(m.cfg.QMPSocket) // a stale socket from a QEMU that died
	// Not CommandContext: the VM outlives the request that powered it on.
	cmd := exec.Command(m.cfg.Command[0], args...)
	out := m.cfg.Output
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a Ctrl-C at the vbmc's terminal does not
	// kill the VMs before the BMC can stop them in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("machine %s: start qemu: %w", m.cfg.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	m.proc, m.done = cmd, done
	m.log.Info("qemu started", "pid", cmd.Process.Pid, "boot", strings.Join(m.bootArgs(), " "))

	for {
		q, err := dialQMP(ctx, m.cfg.QMPSocket)
		if err == nil {
			q.Close()
			break
		}
		select {
		case <-done:
			return fmt.Errorf("machine %s: qemu exited at start (%v); check the qemu command", m.cfg.Name, cmd.ProcessState)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			return fmt.Errorf("machine %s: qemu's qmp socket did not come up: %w", m.cfg.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if cdOnce {
		// The firmware read its boot order at this start; from the next
		// reset (the guest's own reboot) on, the CD is no longer first.
		if err := m.run(ctx, "qom-set", map[string]any{"path": "/machine/peripheral/" + mediaDevice, "property": "bootindex", "value": -1}); err != nil {
			return fmt.Errorf("machine %s: spend the one-time CD boot: %w", m.cfg.Name, err)
		}
	}
	if m.boot.Enabled == "Once" {
		// QEMU restores its normal order after the first reset by itself
		// (SeaBIOS; for OVMF, see cdOnce); the override is spent.
		m.boot = Boot{Target: "None", Enabled: "Disabled", Mode: m.boot.Mode}
	}
	if m.media != "" && m.cfg.CDROMDrive != "" {
		if err := m.changeMedium(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (m *QEMU) PowerOff(ctx context.Context, force bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, alive, err := m.status(ctx)
	if err != nil || !alive {
		return err
	}
	if !force {
		if !st.Running {
			return nil
		}
		// The guest decides; QEMU exits (or, with -no-shutdown, stops)
		// when it powers off.
		return m.run(ctx, "system_powerdown", nil)
	}
	return m.stop(ctx)
}

// stop ends the machine at once: quits QEMU when this BMC can start it
// again, otherwise pauses it. Called with m.mu held.
func (m *QEMU) stop(ctx context.Context) error {
	if len(m.cfg.Command) == 0 {
		return m.run(ctx, "stop", nil)
	}
	if err := m.run(ctx, "quit", nil); err != nil && !isNoListener(err) {
		return err
	}
	return m.waitExit(ctx)
}

// waitExit waits for the QEMU this BMC started to exit, killing it if it
// lingers.
func (m *QEMU) waitExit(ctx context.Context) error {
	if m.proc == nil {
		return nil
	}
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		_ = m.proc.Process.Kill()
		<-m.done
	case <-ctx.Done():
		return ctx.Err()
	}
	m.proc, m.done = nil, nil
	return nil
}

func (m *QEMU) Reset(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, alive, err := m.status(ctx)
	if err != nil {
		return err
	}
	if !alive || !st.Running {
		return m.powerOn(ctx)
	}
	if len(m.bootArgs()) > 0 && len(m.cfg.Command) > 0 {
		// -boot is read at QEMU start only: restart the process so the
		// pending boot device takes effect.
		if err := m.stop(ctx); err != nil {
			return err
		}
		return m.powerOn(ctx)
	}
	return m.run(ctx, "system_reset", nil)
}

func (m *QEMU) SetBootDevice(_ context.Context, b Boot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.boot = b
	return nil
}

// BootOverride reports the pending boot override; a Once override reads as
// Disabled after the start that used it.
func (m *QEMU) BootOverride() Boot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boot
}

func (m *QEMU) InsertMedia(ctx context.Context, image string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.media = image
	if m.cfg.CDROMDrive == "" {
		m.log.Info("virtual media takes effect at the next power on", "image", image)
		return nil
	}
	_, alive, err := m.status(ctx)
	if err != nil || !alive {
		return err
	}
	return m.changeMedium(ctx)
}

func (m *QEMU) changeMedium(ctx context.Context) error {
	return m.run(ctx, "blockdev-change-medium", map[string]any{
		"device": m.cfg.CDROMDrive, "filename": mediaPath(m.media), "format": "raw", "read-only-mode": "read-only",
	})
}

func (m *QEMU) EjectMedia(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	media := m.media
	m.media = ""
	drive := m.cfg.CDROMDrive
	if drive == "" {
		if media == "" || pflashVars(m.cfg.Command) == "" {
			return nil
		}
		// A UEFI machine's CD is a drive of its own (see start).
		drive = mediaDrive
	}
	_, alive, err := m.status(ctx)
	if err != nil || !alive {
		return err
	}
	return m.run(ctx, "eject", map[string]any{"device": drive, "force": true})
}

// The drive and device of a UEFI machine's virtual CD (see start).
const (
	mediaDrive  = "vmedia"
	mediaDevice = "vmedia-cd"
)

// mediaPath turns a file:// URL into the path QEMU opens; QEMU opens
// http(s) URLs itself (with Debian's qemu-block-extra).
func mediaPath(image string) string {
	return strings.TrimPrefix(image, "file://")
}

// PID is the process id of the QEMU this BMC started, or 0.
func (m *QEMU) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.proc.Process == nil {
		return 0
	}
	select {
	case <-m.done:
		return 0
	default:
	}
	return m.proc.Process.Pid
}

// Close stops the QEMU this BMC started, if it still runs.
func (m *QEMU) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-m.done:
		m.proc, m.done = nil, nil
		return nil
	default:
	}
	if err := m.run(ctx, "quit", nil); err != nil {
		_ = m.proc.Process.Kill()
	}
	return m.waitExit(ctx)
}
