// Package testpeer starts the real third-party peers that bmc's tests talk
// to (QEMU; OpenIPMI's ipmi_sim, configured by bmc/ipmisim) and metal's own
// virtual BMC, and removes them when the test ends. A missing tool fails the test with the Debian
// package to install; nothing is skipped silently.
package testpeer

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/ipmisim"
	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
)

// Need fails t unless program is on PATH.
func Need(t testing.TB, program, debianPackage string) string {
	t.Helper()
	testenv.Integration(t, program+" (Debian "+debianPackage+")")
	p, err := exec.LookPath(program)
	if err != nil {
		t.Fatalf("%s is needed for this test: apt-get install -y %s", program, debianPackage)
	}
	return p
}

// Log is a logger capturing everything (debug level) for assertions; the
// text is shown if the test fails.
type Log struct {
	*slog.Logger
	buf *syncbuf.Buffer
}

func (l *Log) String() string { return l.buf.String() }

// NewLog returns a capturing debug logger.
func NewLog(t testing.TB) *Log {
	buf := &syncbuf.Buffer{}
	l := &Log{Logger: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4})), buf: buf}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("captured log:\n%s", buf.String())
		}
	})
	return l
}

// QEMUCommand is a cheap QEMU: no disks, no display, 32 MB, under the
// accelerator the host's probe chose. SeaBIOS finds nothing to boot and
// idles.
func QEMUCommand(t testing.TB) []string {
	q := Need(t, qemu.Program, "qemu-system-x86")
	return append(append([]string{q}, qemu.BaseArgs(qemutest.Accel(t), 32)...), "-no-user-config",
		"-drive", "if=ide,index=2,media=cdrom,id=cd0")
}

// QEMU returns a powered-off QEMU machine controlled by the virtual BMC,
// stopped at cleanup.
func QEMU(t testing.TB, name string, log *slog.Logger) *virtual.QEMU {
	t.Helper()
	dir, err := os.MkdirTemp("", "vbmc")
	if err != nil {
		t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	m, err := virtual.NewQEMU(virtual.QEMUConfig{
		Name:       name,
		QMPSocket:  filepath.Join(dir, "qmp.sock"), // short path: Unix sockets allow ~108 bytes
		Command:    QEMUCommand(t),
		CDROMDrive: "cd0",
		Output:     out,
		Log:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("stop qemu %s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("qemu %s output:\n%s", name, out.String())
		}
		os.RemoveAll(dir)
	})
	return m
}

// VBMC serves a virtual BMC for machines on a loopback port. With tls it
// serves HTTPS with a fresh self-signed certificate, whose PEM is
// returned (and written to a file, caFile) for clients to trust.
func VBMC(t testing.TB, tls bool, user, pass string, log *slog.Logger, machines ...virtual.MachineSpec) (url, caFile string) {
	t.Helper()
	return VBMCWith(t, tls, virtual.Options{Username: user, Password: pass, Log: log}, machines...)
}

// VBMCWith is VBMC with all the server's options (its auth mode).
func VBMCWith(t testing.TB, tls bool, opts virtual.Options, machines ...virtual.MachineSpec) (url, caFile string) {
	t.Helper()
	srv, err := virtual.NewServer(opts, machines...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	scheme := "http"
	if tls {
		cert, pem, err := virtual.SelfSignedCert()
		if err != nil {
			t.Fatal(err)
		}
		caFile = filepath.Join(t.TempDir(), "vbmc-ca.pem")
		if err := os.WriteFile(caFile, pem, 0o600); err != nil {
			t.Fatal(err)
		}
		go func() { done <- srv.Serve(ctx, ln, &cert) }()
		scheme = "https"
	} else {
		go func() { done <- srv.Serve(ctx, ln, nil) }()
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("virtual bmc: %v", err)
		}
	})
	return scheme + "://" + ln.Addr().String(), caFile
}

// IPMISim is a running ipmi_sim, configured by bmc/ipmisim as metal lab
// runs it: its chassis powers a real QEMU.
type IPMISim struct {
	Addr  string // 127.0.0.1:port
	files ipmisim.Files
	proc  *ipmisim.Process
}

// Power is the chassis power as the BMC's machine shows it: "1" while the
// QEMU it started runs, else "0".
func (s *IPMISim) Power(testing.TB) string {
	if s.proc.QEMUPID() != 0 {
		return "1"
	}
	return "0"
}

// Calls are the chassis_control invocations so far, one a line (with any
// errors QEMU printed while starting).
func (s *IPMISim) Calls(t testing.TB) []string {
	b, err := os.ReadFile(s.files.ChassisLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// StartIPMISim runs OpenIPMI's ipmi_sim as a LAN BMC on a free loopback
// UDP port, with one admin user, powering a cheap QEMU (QEMUCommand), and
// stops both at cleanup.
func StartIPMISim(t testing.TB, user, pass string) *IPMISim {
	t.Helper()
	return StartIPMISimWith(t, ipmisim.Config{Username: user, Password: pass})
}

// StartIPMISimWith is StartIPMISim with more of the BMC configured (its
// serial-over-LAN device, FRU, sensors); name and QEMU are filled in.
func StartIPMISimWith(t testing.TB, cfg ipmisim.Config) *IPMISim {
	t.Helper()
	Need(t, "ipmitool", "ipmitool")
	if cfg.Name == "" {
		cfg.Name = "metaltest"
	}
	if len(cfg.QEMU) == 0 {
		cfg.QEMU = QEMUCommand(t)
	}
	files, p := RunIPMISim(t, cfg)
	return &IPMISim{Addr: p.Addr(), files: files, proc: p}
}

// RunIPMISim writes cfg into a temporary folder and runs ipmi_sim from it
// until the test ends; then it stops it and the QEMU it started, and shows
// its output and chassis log if the test failed.
func RunIPMISim(t testing.TB, cfg ipmisim.Config) (ipmisim.Files, *ipmisim.Process) {
	t.Helper()
	Need(t, "ipmi_sim", "openipmi")
	files, err := ipmisim.Write(t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := ipmisim.Start(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			calls, _ := os.ReadFile(files.ChassisLog)
			t.Logf("ipmi_sim output:\n%s\nchassis log:\n%s", p.Output(), calls)
		}
	})
	return files, p
}
