package daemon

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/daemon/serial"
)

// ConsoleLogDir is the folder, in the state directory, of the machines'
// console logs (serial.LogPath names each).
const ConsoleLogDir = "consoles"

const (
	// consoleLogMax bounds one console log file; with the rotated one,
	// a machine's log takes at most twice this.
	consoleLogMax = 1 << 20
	// consoleRetryMax bounds the pause before opening a console again:
	// a machine that powers on is logged from within this much.
	consoleRetryMax = 30 * time.Second
	// consoleRescan is how often the site is looked at again for
	// machines to hold the console of (an apply may reload it).
	consoleRescan = 30 * time.Second
)

// ConsoleLogPath is where the daemon with state directory dir keeps
// machine's console log.
func ConsoleLogPath(dir, machine string) string {
	return serial.LogPath(filepath.Join(dir, ConsoleLogDir), machine)
}

// consoleLogFunc is the API's view of the console logs; nil when the
// daemon keeps none.
func (d *Daemon) consoleLogFunc() func(machine string, n int) ([]string, error) {
	if !d.consoleLogs {
		return nil
	}
	return func(machine string, n int) ([]string, error) {
		if strings.ContainsAny(machine, "/\x00") {
			return nil, nil
		}
		return serial.Tail(ConsoleLogPath(d.StateDir, machine), n)
	}
}

// keepConsoles holds the console of every machine that has one open in
// the hub, logging what it prints, until ctx ends. The hub's viewers
// share the held stream, which is what lets a BMC's single SOL session
// serve both the log and the people watching.
func (d *Daemon) keepConsoles(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	kept := map[string]bool{}
	for {
		for _, m := range d.Site().Machines {
			name := m.Name
			if kept[name] || !d.consoleOpen.has(name) {
				continue
			}
			kept[name] = true
			log, err := serial.OpenLog(ConsoleLogPath(d.StateDir, name), consoleLogMax)
			if err != nil {
				d.log.Warn("console not logged", "machine", name, "err", err)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer log.Close()
				d.consoles.Keep(ctx, name, log, func() bool { return d.consoleOpen.has(name) }, consoleRetryMax, d.log)
			}()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(consoleRescan):
		}
	}
}
