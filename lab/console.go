package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/metal-dev/metal/daemon/api/client"
)

// ErrSOLOnly says a VM's serial line reaches only its BMC's
// Serial-over-LAN (the IPMI VM, as on a real server), and no metal serve
// runs to open it: `metal console` inside the lab's namespace can.
var ErrSOLOnly = errors.New("its serial console is its BMC's Serial-over-LAN only, and no metal serve runs for the lab")

// Console opens vm's serial console. While the lab's metal serve runs it
// goes through serve's console hub, as the browser terminal does: both
// see the same stream (QEMU's socket and a BMC's SOL serve one client at
// a time), and the session is recorded on the machine's timeline. With
// no metal serve it is QEMU's console socket itself. via says which way
// it went, for the person at the terminal.
func (st *State) Console(ctx context.Context, vm *VM) (conn io.ReadWriteCloser, via string, err error) {
	if sock, ok := client.Running(filepath.Join(st.Dir, "state")); ok {
		c, err := client.New(sock).Console(ctx, vm.Name)
		if err != nil {
			return nil, "", err
		}
		return c, "through metal serve's console hub (browser terminals on " + vm.Name + " see the same)", nil
	}
	if vm.Console == "" {
		return nil, "", fmt.Errorf("console of %s: %w", vm.Name, ErrSOLOnly)
	}
	conn, err = dialConsole(ctx, vm.Console)
	if err != nil {
		return nil, "", err
	}
	return conn, "straight to QEMU's console socket (no metal serve runs for the lab, so no browser terminal can watch it meanwhile)", nil
}

func dialConsole(ctx context.Context, socket string) (net.Conn, error) {
	if _, err := os.Stat(socket); err != nil {
		return nil, fmt.Errorf("console %s: %w (is the VM powered on? metal lab status shows it)", socket, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("console %s: %w (is the VM powered on? metal lab status shows it)", socket, err)
	}
	return conn, nil
}
