package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
)

// EscapeByte ends a console session: Ctrl-], as in telnet and virsh.
const EscapeByte = 0x1d

// ErrEscaped is returned by Attach when the user typed EscapeByte.
var ErrEscaped = errors.New("console detached")

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
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	fromUser := make(chan error, 1)
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := in.Read(buf)
			if i := bytes.IndexByte(buf[:n], EscapeByte); i >= 0 {
				_, _ = conn.Write(buf[:i])
				fromUser <- ErrEscaped
				return
			}
			if n > 0 {
				if _, werr := conn.Write(buf[:n]); werr != nil {
					fromUser <- nil
					return
				}
			}
			if err != nil {
				// End of input: keep showing the console until the VM
				// closes it or ctx ends.
				return
			}
		}
	}()
	fromVM := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, conn)
		fromVM <- err
	}()
	select {
	case err := <-fromUser:
		return err
	case err := <-fromVM:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	}
}
