// Package ipmisim makes OpenIPMI's ipmi_sim (Debian package openipmi) the
// IPMI BMC of one QEMU machine: it writes the LAN configuration, the
// command file and a chassis_control script whose power on, off, cycle and
// reset start and stop a QEMU process, and whose boot device choice is
// applied (once) the next time QEMU starts. The machine may also be a
// plain process group (Config.Host), for tests whose host is a program.
package ipmisim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config describes one simulated BMC and the machine it controls.
type Config struct {
	// Name is the BMC's name in ipmi_sim and in logs.
	Name string
	// Address is the UDP host:port ipmi_sim listens on; port 0 picks a
	// free one when Write runs. Default 127.0.0.1:0.
	Address string
	// Username and Password are the BMC's one admin user. IPMI limits them
	// to 16 and 20 bytes.
	Username string
	Password string
	// QEMU is the QEMU command line a power on runs. Write adds
	// -daemonize and -pidfile, so that the chassis script returns once QEMU
	// is up and a later power off can find it; it must not use stdio.
	QEMU []string
	// Host, in place of QEMU, is a command line that stands for the whole
	// host: power on starts it in a session of its own, power off kills
	// that session at once (SIGKILL, as pulling the power does). Tests of
	// metal's own failover run a metal process behind a real BMC with it.
	Host []string
	// IPMISim overrides the ipmi_sim found on PATH.
	IPMISim string
	// SOL is the serial device the BMC offers as the machine's
	// Serial-over-LAN console: a path (a pty, /dev/ttyS1), or
	// "tcp:HOST:PORT" to connect to. ipmi_sim keeps trying to connect
	// until the device is there, every 10 s, but may stop trying once it
	// closed: a machine that powers off and on (a QEMU serving its serial
	// port) is wired through ServeLine, which never closes. Empty: the
	// BMC has no SOL, as some real ones have not.
	SOL string
	// FRU, when set, is the BMC's FRU inventory (device 0).
	FRU *FRU
	// Sensors are the BMC's SDR repository, with their readings.
	Sensors []Sensor
	// Log receives progress; nil discards. It never sees the password.
	Log *slog.Logger
}

// Files are what Write produced; Start runs ipmi_sim from them.
type Files struct {
	Dir          string // everything below lives here
	Addr         string // host:port ipmi_sim listens on
	Username     string
	LanConf      string // ipmi_sim -c; holds the password, mode 0600
	Commands     string // ipmi_sim -f
	Script       string // chassis_control program
	PIDFile      string // QEMU's pid while it runs
	BootFile     string // next boot device, consumed by the next start
	StateDir     string // ipmi_sim -s
	PasswordFile string // the password alone (for ipmitool -f), mode 0600
	ChassisLog   string // every chassis_control call, and QEMU's start errors
	IPMISim      string // program to run
	Log          *slog.Logger
	// Host: the machine is Config.Host's session, whose leader's pid is
	// in PIDFile (else a QEMU).
	Host bool
}

// Limits IPMI 2.0 puts on user names and passwords.
const (
	maxUsername = 16
	maxPassword = 20
)

// Write creates dir (if needed) and writes ipmi_sim's configuration for cfg
// into it. It does not start anything.
func Write(dir string, cfg Config) (Files, error) {
	if len(cfg.QEMU) == 0 && len(cfg.Host) == 0 {
		return Files{}, errors.New("ipmisim: no QEMU command line")
	}
	if len(cfg.QEMU) > 0 && len(cfg.Host) > 0 {
		return Files{}, errors.New("ipmisim: both a QEMU and a host command line; the BMC powers one machine")
	}
	if cfg.Username == "" || len(cfg.Username) > maxUsername || strings.ContainsAny(cfg.Username, "\"\n\\ ") {
		return Files{}, fmt.Errorf("ipmisim: user name must be 1-%d bytes without quotes, spaces or newlines", maxUsername)
	}
	// The password goes into a quoted string of lan.conf; say what is
	// wrong without echoing it.
	if cfg.Password == "" || len(cfg.Password) > maxPassword || strings.ContainsAny(cfg.Password, "\"\n\\") {
		return Files{}, fmt.Errorf("ipmisim: password must be 1-%d bytes without quotes, backslashes or newlines", maxPassword)
	}
	if strings.ContainsAny(cfg.SOL, "\"\n") {
		return Files{}, errors.New("ipmisim: SOL device must not hold quotes or newlines")
	}
	if cfg.Name == "" {
		cfg.Name = "metal"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	sim := cfg.IPMISim
	if sim == "" {
		p, err := exec.LookPath("ipmi_sim")
		if err != nil {
			return Files{}, fmt.Errorf("ipmisim: ipmi_sim not found (apt-get install openipmi): %w", err)
		}
		sim = p
	}
	addr, err := resolveAddr(cfg.Address)
	if err != nil {
		return Files{}, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return Files{}, fmt.Errorf("ipmisim: %w", err)
	}
	f := Files{
		Dir: dir, Addr: addr, Username: cfg.Username,
		LanConf:      filepath.Join(dir, "lan.conf"),
		Commands:     filepath.Join(dir, "cmds"),
		Script:       filepath.Join(dir, "chassis"),
		PIDFile:      filepath.Join(dir, "qemu.pid"),
		BootFile:     filepath.Join(dir, "bootdev"),
		StateDir:     filepath.Join(dir, "state"),
		PasswordFile: filepath.Join(dir, "password"),
		ChassisLog:   filepath.Join(dir, "chassis.log"),
		IPMISim:      sim,
		Log:          cfg.Log,
		Host:         len(cfg.Host) > 0,
	}
	if err := os.MkdirAll(f.StateDir, 0o700); err != nil {
		return Files{}, fmt.Errorf("ipmisim: %w", err)
	}
	host, port, _ := net.SplitHostPort(addr)
	// Without a startlan section (and mc_setbmc in the command file)
	// ipmi_sim exits at once with status 1. Only straight and md5 are
	// offered beyond "none" for the callback level, which nobody uses.
	lan := fmt.Sprintf(`name "%s"
set_working_mc 0x20
  startlan 1
    addr %s %s
    priv_limit admin
    allowed_auths_callback none
    allowed_auths_user md5 straight
    allowed_auths_operator md5 straight
    allowed_auths_admin md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
  user 2 true "%s" "%s" admin 10 md5 straight
`, cfg.Name, host, port, f.Script, cfg.Username, cfg.Password)
	if cfg.SOL != "" {
		lan += fmt.Sprintf("  sol \"%s\" 115200\n", cfg.SOL)
	}
	// No persist_sdr: the SDR repository is the configured sensors on
	// every start, not those of earlier starts as well.
	cmds := "mc_setbmc 0x20\n" +
		"mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\n"
	if cfg.FRU != nil {
		fru, err := fruCommand(*cfg.FRU)
		if err != nil {
			return Files{}, err
		}
		cmds += fru
	}
	sensors, err := sensorCommands(cfg.Sensors)
	if err != nil {
		return Files{}, err
	}
	cmds += sensors + "sel_enable 0x20 1000 0x0a\n" + "mc_enable 0x20\n"
	script := chassisScript(f, cfg.Host)
	if !f.Host {
		script = chassisScript(f, append(append([]string{}, cfg.QEMU...), "-daemonize", "-pidfile", f.PIDFile))
	}
	writes := []struct {
		path string
		data string
		mode os.FileMode
	}{
		{f.LanConf, lan, 0o600},
		{f.PasswordFile, cfg.Password, 0o600},
		{f.Commands, cmds, 0o600},
		{f.Script, script, 0o700},
	}
	for _, w := range writes {
		if err := writeFile(w.path, []byte(w.data), w.mode); err != nil {
			return Files{}, err
		}
	}
	cfg.Log.Debug("ipmi_sim configuration written", "dir", dir, "addr", addr, "user", cfg.Username)
	return f, nil
}

// writeFile writes data with mode even when the file already exists with a
// wider one (WriteFile keeps an existing file's mode).
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("ipmisim: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("ipmisim: %w", err)
	}
	return nil
}

// resolveAddr fills in defaults and picks a free UDP port for port 0, so the
// address is known before ipmi_sim starts (it does not report the port).
func resolveAddr(addr string) (string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("ipmisim: address %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "0" {
		c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", fmt.Errorf("ipmisim: pick a port on %s: %w", host, err)
		}
		port = strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
		c.Close()
	}
	return net.JoinHostPort(host, port), nil
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// chassisScript is ipmi_sim's chassis_control program. ipmi_sim runs it as
// "<script> 0x20 get power boot" or "<script> 0x20 set power 1 [boot pxe]".
// Power is whether the pid in the pid file is alive (not a zombie); a boot device is kept
// in a file and turned into -boot once=... at the next start, because
// IPMI's boot device applies to the next boot only. For a QEMU, machine
// is its command line with -daemonize and -pidfile; for a host
// (f.Host), the command line of the host's program.
func chassisScript(f Files, machine []string) string {
	q := make([]string, len(machine))
	for i, a := range machine {
		q[i] = shellQuote(a)
	}
	// A QEMU daemonizes and writes its pid itself; it gets SIGTERM, then
	// SIGKILL after 5 s. A host's program runs under a shell in a session
	// of its own (the shell's $0 is the pid file, so that its command line
	// names it, as QEMU's does) and its whole session is killed at once.
	launch := strings.Join(q, " ") + ` $bootopt </dev/null >>"$log" 2>&1
	cat "$pidfile" >> "$started" 2>/dev/null`
	kill := `kill "$pid" 2>/dev/null
	i=0
	while alive "$pid" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
	kill -9 "$pid" 2>/dev/null`
	if f.Host {
		launch = `setsid sh -c '"$@"; exit $?' "$pidfile" ` + strings.Join(q, " ") + ` </dev/null >>"$log" 2>&1 &
	echo $! > "$pidfile"
	echo $! >> "$started"`
		kill = `kill -9 -- "-$pid" 2>/dev/null
	i=0
	while alive "$pid" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done`
	}
	return `#!/bin/sh
# Written by metal (bmc/ipmisim): chassis_control for ipmi_sim.
pidfile=` + shellQuote(f.PIDFile) + `
started=` + shellQuote(startedFile(f.PIDFile)) + `
bootfile=` + shellQuote(f.BootFile) + `
log=` + shellQuote(f.ChassisLog) + `
echo "$*" >> "$log"

# alive: the process exists and has not exited. Not kill -0 alone: that
# counts a zombie, a QEMU that exited (the guest powered off) and that no
# one reaped, as running; a container's PID 1 may never reap it.
alive() {
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	case ${stat##*") "} in
	Z*|X*|x*) return 1 ;;
	esac
	return 0
}

running() {
	[ -s "$pidfile" ] && alive "$(cat "$pidfile")"
}

start() {
	running && return 0
	bootopt=
	if [ -s "$bootfile" ]; then
		case $(cat "$bootfile") in
		pxe)   bootopt="-boot once=n" ;;
		disk)  bootopt="-boot once=c" ;;
		cdrom) bootopt="-boot once=d" ;;
		bios)  bootopt="-boot menu=on" ;;
		esac
		rm -f "$bootfile"
	fi
	rm -f "$pidfile"
	# QEMU's -daemonize (or a host's &) returns once it runs, with stdio
	# away from this script's, so ipmi_sim is not left waiting on its
	# output.
	` + launch + `
}

stop() {
	running || { rm -f "$pidfile"; return 0; }
	pid=$(cat "$pidfile")
	` + kill + `
	rm -f "$pidfile"
	return 0
}

shift
op=$1; shift
case $op in
get)
	for p in "$@"; do
		case $p in
		power) if running; then echo "power:1"; else echo "power:0"; fi ;;
		boot)  if [ -s "$bootfile" ]; then echo "boot:$(cat "$bootfile")"; else echo "boot:none"; fi ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		case $1 in
		power) if [ "$2" = 1 ]; then start; else stop; fi ;;
		reset) stop; start ;;
		boot)  case $2 in
		       none|default) rm -f "$bootfile" ;;
		       *) echo "$2" > "$bootfile" ;;
		       esac ;;
		esac
		shift 2
	done ;;
check) ;;
esac
exit 0
`
}

// Process is a running ipmi_sim.
type Process struct {
	files  Files
	cmd    *exec.Cmd
	exited chan struct{}
	out    *tailBuffer
}

// Start runs ipmi_sim from files and returns once it listens on its UDP
// port. Stop ends it, and the QEMU it started.
func Start(ctx context.Context, files Files) (*Process, error) {
	log := files.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	out := &tailBuffer{max: 8 << 10}
	// Not CommandContext: the simulator outlives the start-up context and
	// ends on Stop.
	cmd := exec.Command(files.IPMISim, "-c", files.LanConf, "-f", files.Commands, "-n", "-s", files.StateDir)
	cmd.Dir = files.Dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ipmisim: start %s: %w", files.IPMISim, err)
	}
	p := &Process{files: files, cmd: cmd, exited: make(chan struct{}), out: out}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	_, port, _ := net.SplitHostPort(files.Addr)
	portNum, _ := strconv.Atoi(port)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		// ipmi_sim binds its port only after it has read a valid
		// configuration, so a bound port owned by it means ready.
		if udpBound(cmd.Process.Pid, portNum) {
			log.Info("ipmi_sim listening", "addr", files.Addr, "pid", cmd.Process.Pid)
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("ipmisim: ipmi_sim exited at once (%v): %s", cmd.ProcessState, out.String())
		case <-ctx.Done():
			p.Stop()
			return nil, fmt.Errorf("ipmisim: waiting for ipmi_sim on %s: %w", files.Addr, ctx.Err())
		case <-deadline:
			p.Stop()
			return nil, fmt.Errorf("ipmisim: ipmi_sim never bound %s: %s", files.Addr, out.String())
		case <-tick.C:
		}
	}
}

// PID is ipmi_sim's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Addr is the UDP address ipmi_sim listens on.
func (p *Process) Addr() string { return p.files.Addr }

// Output is the tail of ipmi_sim's stdout and stderr.
func (p *Process) Output() string { return p.out.String() }

// QEMUPID is the pid of the QEMU the BMC started, or 0 when it is off;
// for a Host, the pid of the shell that leads the host's session.
func (p *Process) QEMUPID() int { return qemuPID(p.files.PIDFile) }

// Stop kills ipmi_sim (by its pid) and the QEMU it started, and waits for
// ipmi_sim to exit.
func (p *Process) Stop() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("ipmisim: kill ipmi_sim: %w", err)
	}
	<-p.exited
	// QEMU was daemonized, so it is no child of ours; kill it only if the
	// pid still names a process started with our pid file, in case the pid
	// was reused. Every QEMU or host the chassis program ever started is
	// killed, not only the one the pid file names now: two power-ons that
	// ipmi_sim ran at once each started one, and the pid file kept only
	// the last.
	pids := startedPIDs(p.files.PIDFile)
	if pid := qemuPID(p.files.PIDFile); pid > 0 {
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		if !startedWith(pid, p.files.PIDFile) {
			continue
		}
		target := pid
		if p.files.Host {
			target = -pid // the host's session, its program included
		}
		if err := syscall.Kill(target, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("ipmisim: kill qemu %d: %w", pid, err)
		}
	}
	os.Remove(p.files.PIDFile)
	os.Remove(startedFile(p.files.PIDFile))
	return nil
}

// startedFile lists, a pid a line, every QEMU or host the chassis program
// started with pidFile.
func startedFile(pidFile string) string { return pidFile + ".started" }

// startedPIDs reads startedFile; a line that is not a pid is skipped (the
// pids are checked against /proc before anything is killed).
func startedPIDs(pidFile string) []int {
	b, _ := os.ReadFile(startedFile(pidFile))
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// startedWith reports whether process pid runs and was started with
// pidFile on its command line (QEMU's -pidfile, a host shell's $0).
func startedWith(pid int, pidFile string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), "\x00"+pidFile+"\x00")
}

// qemuPID reads the pid file and returns the pid if it is alive and is
// the QEMU that wrote it. An exited QEMU not yet reaped (a zombie) has an
// empty command line, so it counts as off here too.
func qemuPID(pidFile string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !startedWith(pid, pidFile) {
		return 0
	}
	return pid
}

// udpBound reports whether process pid holds a UDP socket on port, from
// /proc/PID/net/udp and the socket inodes in /proc/PID/fd.
func udpBound(pid, port int) bool {
	inodes := map[string]bool{}
	for _, name := range []string{"udp", "udp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, name))
		if err != nil {
			continue
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) < 10 {
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			if i < 0 {
				continue
			}
			if p, err := strconv.ParseInt(fields[1][i+1:], 16, 32); err == nil && int(p) == port {
				inodes[fields[9]] = true
			}
		}
		f.Close()
	}
	if len(inodes) == 0 {
		return false
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(target, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] {
			return true
		}
	}
	return false
}
