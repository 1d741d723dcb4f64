package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/metal-dev/metal/internal/serialterm"
)

// EscapeByte ends a console session: Ctrl-], as in telnet and virsh.
const EscapeByte = serialterm.EscapeByte

// ErrEscaped is returned by Attach when the user typed EscapeByte.
var ErrEscaped = serialterm.ErrEscaped

// Attach connects to a VM's serial console socket and copies in to it and
// it to out until the user types EscapeByte (ErrEscaped), the VM closes the
// console (nil: it powered off or restarted), or ctx ends.
func Attach(ctx context.Context, socket string, in io.Reader, out io.Writer) error {
	if _, err := os.Stat(socket); err != nil {
		return fmt.Errorf("console %s: %w (is the VM powered on? metal lab status shows it)", socket, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("console %s: %w (is the VM powered on? metal lab status shows it)", socket, err)
	}
	return serialterm.Attach(ctx, conn, in, out)
}
