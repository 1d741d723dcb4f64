package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/site"
)

// consoleOpener opens machines' serial consoles for the browser terminal and
// the API: a lab VM's QEMU socket when there is one, else the BMC's IPMI
// Serial-over-LAN for a machine whose bmc block speaks IPMI. The hub
// holds one stream per machine while anyone watches, which suits SOL:
// a BMC allows one session at a time.
type consoleOpener struct {
	sockets serial.UnixSockets // "" when metal serve has no lab sockets
	site    func() *site.Site
	log     *slog.Logger
}

// solOpenTimeout bounds starting one SOL session from the hub.
const solOpenTimeout = 10 * time.Second

func (c consoleOpener) OpenSerial(ctx context.Context, machine string) (io.ReadWriteCloser, error) {
	if c.sockets != "" {
		path := strings.ReplaceAll(string(c.sockets), "{machine}", machine)
		if _, err := os.Stat(path); err == nil || c.sol(machine) == nil {
			return c.sockets.OpenSerial(ctx, machine)
		}
	}
	decl := c.sol(machine)
	if decl == nil {
		return nil, fmt.Errorf("console of %s: %w (its bmc block does not speak IPMI Serial-over-LAN)", machine, serial.ErrNoConsole)
	}
	// The hub opens streams one at a time, so a BMC that does not
	// answer holds up other consoles' opening: give it less time than
	// a BMC action gets.
	cfg := apply.BMCConfig(decl)
	cfg.Timeout = solOpenTimeout
	b, err := bmc.New(cfg, c.log)
	if err != nil {
		return nil, err
	}
	conn, err := b.SerialConsole(ctx, bmc.ConsoleOptions{})
	if errors.Is(err, bmc.ErrUnsupported) {
		return nil, fmt.Errorf("%w: %w", serial.ErrNoConsole, err)
	}
	return conn, err
}

// sol is the declared machine when its BMC may offer SOL (protocol ipmi
// or auto), else nil.
func (c consoleOpener) sol(machine string) *site.Machine {
	for _, m := range c.site().Machines {
		if m.Name == machine && m.BMC != nil && m.BMC.Protocol != bmc.ProtocolRedfish {
			return m
		}
	}
	return nil
}

// has says whether machine is in the site and may have a console: a
// lab socket pattern is set, or its BMC may offer SOL.
func (c consoleOpener) has(machine string) bool {
	if c.sol(machine) != nil {
		return true
	}
	if c.sockets == "" {
		return false
	}
	for _, m := range c.site().Machines {
		if m.Name == machine {
			return true
		}
	}
	return false
}

// any says whether some machine may have a console: there are lab
// sockets, or a machine's BMC may offer SOL. Without, the pages offer no
// terminal.
func (c consoleOpener) any() bool {
	if c.sockets != "" {
		return true
	}
	for _, m := range c.site().Machines {
		if c.sol(m.Name) != nil {
			return true
		}
	}
	return false
}
