package daemon

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/inventory"
)

// Supervise runs beside Serve for metal serve: it reloads the site file
// on SIGHUP (systemctl reload), and, under systemd (Type=notify), says
// READY=1 once Ready is closed, RELOADING=1 around a reload, STOPPING=1
// when ctx ends, and pings the watchdog at half its interval while the
// store answers. Outside systemd the notifications are no-ops. It returns
// when ctx ends.
func (d *Daemon) Supervise(ctx context.Context) {
	log := d.log.With("component", "supervise")
	notify := func(state string) {
		if _, err := sd.SdNotify(false, state); err != nil {
			log.Warn("sd_notify", "state", state, "err", err)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var watchdog <-chan time.Time
	if every, err := sd.SdWatchdogEnabled(false); err == nil && every > 0 {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		watchdog = t.C
	}
	ready := d.Ready()
	for {
		select {
		case <-ctx.Done():
			notify("STOPPING=1")
			return
		case <-ready:
			ready = nil
			s := d.Site()
			notify("READY=1\nSTATUS=serving site " + s.Name)
		case <-hup:
			notify("RELOADING=1\nMONOTONIC_USEC=" + monotonicUsec())
			if err := d.Reload(ctx); err != nil {
				log.Error("site reload refused; still serving the site as before", "file", d.siteFile, "err", err)
				notify("READY=1\nSTATUS=reload refused: " + oneLine(err.Error()))
			} else {
				notify("READY=1\nSTATUS=serving site " + d.Site().Name)
			}
		case <-watchdog:
			// A daemon whose store no longer answers is not serving
			// correctly: let systemd restart it.
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := d.Store.Machine(cctx, "metal-watchdog-probe")
			cancel()
			if err != nil && !errors.Is(err, inventory.ErrNotFound) {
				log.Warn("watchdog: the store does not answer; not pinging", "err", err)
				continue
			}
			notify("WATCHDOG=1")
		}
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants
// with RELOADING=1.
func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "0"
	}
	return strconv.FormatInt(ts.Nano()/1000, 10)
}

func oneLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
