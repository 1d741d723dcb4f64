// Package agent is metal's install agent: the program a machine runs when
// it net-boots into metal's initramfs, where it is /init (PID 1). It is
// metal's own binary; there is no shell, busybox or second OS.
//
// On boot it mounts /proc, /sys, /dev (devtmpfs), /run and /tmp, loads the
// kernel modules the initramfs carries (NIC and disk drivers, in
// modules.dep order, with finit_module), brings the boot NIC up (BOOTIF
// from the command line, else every NIC with a link) and takes a DHCP lease
// with insomniacslk/dhcp's nclient4, or, booted from virtual media where
// no DHCP server answers, sets the static address and gateway the command
// line gives (metal.ip=ADDR/PREFIX metal.gw=ADDR). It learns metal's URL from the kernel
// command line (metal.url=http://HOST:PORT), reports the machine's hardware
// and asks for its task over the protocol of pxe/agentapi:
//
//   - discover: nothing more; it reports the task done and asks again
//     every few seconds, until metal gives it another task;
//   - install: stream the image to the disk, decompressing and hashing as
//     it goes (images.Write), verify the checksum, write the cloud-init
//     NoCloud seed (see seed.go for where), report done and reboot;
//   - wipe: zero the first and last MiB of each disk (partition tables,
//     filesystem and RAID labels) and report done.
//
// Every failure (no disk, a checksum mismatch, an HTTP error) is reported
// with its cause; the agent then goes on asking for a task. As PID 1 it
// never exits: the kernel would panic.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/pxe/agentapi"
)

// Options tune the agent's main loop.
type Options struct {
	Logger *slog.Logger
	// Reboot restarts the machine after an install (default: restart,
	// which no hung driver can stop).
	Reboot func() error
	// NetWait is how long NICs get to come up and answer DHCP before the
	// agent logs the failure and tries again (default 60 s).
	NetWait time.Duration
}

// Init prepares the bare environment of an initramfs: the kernel's
// filesystems, the console as stdin/out/err, and the kernel modules
// packed under /lib/modules/<release>. Failures are logged, not fatal: a
// kernel with the drivers built in needs no modules.
func Init(log *slog.Logger) {
	mounts := []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			log.Warn("mkdir", "dir", m.dir, "err", err)
		}
		if err := unix.Mount(m.src, m.dir, m.fs, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			log.Warn("mount", "dir", m.dir, "fs", m.fs, "err", err)
		}
	}
	// The kernel opened /dev/console for us only if the initramfs had
	// one; devtmpfs has it now.
	if fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		for _, std := range []int{0, 1, 2} {
			unix.Dup3(fd, std, 0)
		}
		unix.Close(fd)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		log.Warn("uname", "err", err)
		return
	}
	release := unix.ByteSliceToString(uts.Release[:])
	dir := filepath.Join("/lib/modules", release)
	n, err := LoadModules(dir, log)
	if err != nil {
		log.Warn("kernel modules", "dir", dir, "err", err)
		return
	}
	log.Info("kernel modules loaded", "release", release, "count", n)
}

// Main is the agent as /init: Init, then the task loop, forever. A panic
// is logged and the loop starts over, since PID 1 must never exit.
func Main(ctx context.Context, opts Options) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	log := opts.Logger
	Init(log)
	for {
		func() {
			defer func() {
				if p := recover(); p != nil {
					log.Error("agent panic; starting over", "panic", fmt.Sprint(p))
				}
			}()
			Serve(ctx, opts)
		}()
		if ctx.Err() != nil {
			return
		}
		time.Sleep(5 * time.Second)
	}
}

// Serve runs the task loop until ctx ends: network, facts, task, report.
func Serve(ctx context.Context, opts Options) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Reboot == nil {
		opts.Reboot = func() error { return restart(log) }
	}
	if opts.NetWait <= 0 {
		opts.NetWait = time.Minute
	}
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}

	var cmd Cmdline
	for {
		b, err := os.ReadFile("/proc/cmdline")
		if err == nil {
			cmd, err = ParseCmdline(string(b))
		}
		if err == nil {
			break
		}
		log.Error("cannot start: the agent does not know where metal is", "err", err)
		if !sleep(30 * time.Second) {
			return
		}
	}
	log.Info("metal agent", "metal", cmd.URL)

	api := &http.Client{Timeout: 30 * time.Second}
	// Images take as long as they take; only connecting and the first
	// answer are bounded.
	fetch := &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 60 * time.Second,
	}}
	var (
		link      *Link
		reported  bool
		failures  int
		finished  = map[string]bool{}
		pollEvery = 5 * time.Second
	)
	for ctx.Err() == nil {
		if link == nil || time.Now().After(link.RenewAt) {
			l, err := NetUp(ctx, cmd, opts.NetWait, log)
			if err != nil {
				log.Error("no network; trying again", "err", err)
				link = nil
				sleep(5 * time.Second)
				continue
			}
			log.Info("network up", "nic", l.Name, "mac", l.MAC.String(), "ip", l.IP.String(), "gateway", l.Gateway)
			link, reported = &l, false
		}
		client := &agentapi.Client{BaseURL: cmd.URL, MAC: link.MAC, Token: cmd.Token, HTTP: api}
		offline := func(what string, err error) {
			failures++
			log.Error(what+"; trying again", "err", err, "failures", failures)
			// Several failures in a row: the link or the lease may be
			// gone, so start from DHCP again.
			if failures >= 3 {
				link, failures = nil, 0
			}
			sleep(pollEvery)
		}
		if !reported {
			if err := client.Facts(ctx, Facts("/")); err != nil {
				offline("reporting facts failed", err)
				continue
			}
			reported = true
		}
		resp, err := client.Task(ctx)
		if err != nil {
			offline("asking for a task failed", err)
			continue
		}
		failures = 0
		if resp.PollSeconds > 0 {
			pollEvery = time.Duration(resp.PollSeconds) * time.Second
		}
		t := resp.Task
		if t == nil || finished[t.ID] {
			sleep(pollEvery)
			continue
		}
		setHostname(t.Hostname)
		w := &Worker{Client: client, HTTP: fetch, Log: log}
		err = w.Run(ctx, *t)
		finished[t.ID] = true
		if err == nil && t.Kind == agentapi.TaskInstall {
			log.Info("install done; rebooting")
			if err := opts.Reboot(); err != nil {
				log.Error("reboot failed", "err", err)
			}
			return
		}
		sleep(pollEvery)
	}
}
