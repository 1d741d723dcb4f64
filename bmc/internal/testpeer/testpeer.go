// Package testpeer starts the real third-party peers that bmc's tests talk
// to (QEMU, OpenIPMI's ipmi_sim) and metal's own virtual BMC, and removes
// them when the test ends. A missing tool fails the test with the Debian
// package to install; nothing is skipped silently.
package testpeer

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/virtual"
)

// Need fails t unless program is on PATH.
func Need(t testing.TB, program, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		t.Fatalf("%s is needed for this test: apt-get install -y %s", program, debianPackage)
	}
	return p
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger
// and a child process.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Log is a logger capturing everything (debug level) for assertions; the
// text is shown if the test fails.
type Log struct {
	*slog.Logger
	buf *syncBuffer
}

func (l *Log) String() string { return l.buf.String() }

// NewLog returns a capturing debug logger.
func NewLog(t testing.TB) *Log {
	buf := &syncBuffer{}
	l := &Log{Logger: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4})), buf: buf}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("captured log:\n%s", buf.String())
		}
	})
	return l
}

// QEMUCommand is a cheap QEMU: no disks, no display, 32 MB, TCG. SeaBIOS
// finds nothing to boot and idles.
func QEMUCommand(t testing.TB) []string {
	q := Need(t, "qemu-system-x86_64", "qemu-system-x86")
	return []string{q, "-M", "pc", "-m", "32", "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg",
		"-drive", "if=ide,index=2,media=cdrom,id=cd0"}
}

// QEMU returns a powered-off QEMU machine controlled by the virtual BMC,
// stopped at cleanup.
func QEMU(t testing.TB, name string, log *slog.Logger) *virtual.QEMU {
	t.Helper()
	dir, err := os.MkdirTemp("", "vbmc")
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
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
	srv, err := virtual.NewServer(virtual.Options{Username: user, Password: pass, Log: log}, machines...)
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

// IPMISim is a running ipmi_sim.
type IPMISim struct {
	Addr      string // 127.0.0.1:port
	StateFile string // power state the chassis script keeps: "0" or "1"
	CallsFile string // every chassis_control call, one a line
}

// Power is the power state ipmi_sim's chassis script last recorded.
func (s *IPMISim) Power(t testing.TB) string {
	b, err := os.ReadFile(s.StateFile)
	if os.IsNotExist(err) {
		return "0"
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Calls are the chassis_control invocations so far.
func (s *IPMISim) Calls(t testing.TB) []string {
	b, err := os.ReadFile(s.CallsFile)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// chassisScript is ipmi_sim's chassis_control program: it keeps power and
// boot device in files, so tests can see what the BMC was told.
const chassisScript = `#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
shift
op=$1; shift
case $op in
get)
	for p in "$@"; do
		case $p in
		power) if [ -f "$dir/power" ]; then echo "power:$(cat "$dir/power")"; else echo "power:0"; fi ;;
		boot)  if [ -f "$dir/boot" ]; then echo "boot:$(cat "$dir/boot")"; else echo "boot:default"; fi ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		case $1 in
		power) echo "$2" > "$dir/power" ;;
		boot)  echo "$2" > "$dir/boot" ;;
		esac
		shift 2
	done ;;
esac
exit 0
`

// StartIPMISim runs OpenIPMI's ipmi_sim as a LAN BMC on a free loopback
// UDP port, with one admin user, and kills it (by PID) at cleanup.
func StartIPMISim(t testing.TB, user, pass string) *IPMISim {
	t.Helper()
	sim := Need(t, "ipmi_sim", "openipmi")
	Need(t, "ipmitool", "ipmitool")
	dir := t.TempDir()
	port := freeUDPPort(t)
	script := filepath.Join(dir, "chassis")
	if err := os.WriteFile(script, []byte(chassisScript), 0o755); err != nil {
		t.Fatal(err)
	}
	// Without mc_setbmc and a startlan section ipmi_sim exits at once.
	lan := fmt.Sprintf(`name "metaltest"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, script, user, pass)
	emu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n"
	lanFile, emuFile := filepath.Join(dir, "lan.conf"), filepath.Join(dir, "emu.cmd")
	if err := os.WriteFile(lanFile, []byte(lan), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(emuFile, []byte(emu), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(sim, "-c", lanFile, "-f", emuFile, "-n", "-s", filepath.Join(dir, "state"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ipmi_sim: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("ipmi_sim output:\n%s", out.String())
		}
	})
	s := &IPMISim{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), StateFile: filepath.Join(dir, "power"), CallsFile: filepath.Join(dir, "calls")}
	// Wait until it answers a session (it binds within milliseconds).
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("ipmi_sim exited at once (%v): %s", cmd.ProcessState, out.String())
		default:
		}
		c := exec.Command("ipmitool", "-I", "lanplus", "-C", "3", "-N", "1", "-R", "1", "-H", "127.0.0.1", "-p", strconv.Itoa(port), "-U", user, "-E", "mc", "info")
		c.Env = []string{"IPMITOOL_PASSWORD=" + pass}
		if err := c.Run(); err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipmi_sim on port %d never answered: %s", port, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeUDPPort(t testing.TB) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
