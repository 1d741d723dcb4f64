// Package serialterm connects a person's terminal to a machine's serial
// console stream, as a serial cable would, until they type the detach
// key. The lab's QEMU console and a BMC's serial-over-LAN are both such
// streams.
package serialterm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/term"
)

// EscapeByte ends a console session: Ctrl-], as in telnet and virsh. It
// never reaches the machine.
const EscapeByte = 0x1d

// ErrEscaped is returned by Attach when the user typed EscapeByte.
var ErrEscaped = errors.New("console detached")

// Attach copies in to conn and conn to out until the user types
// EscapeByte (ErrEscaped), the stream ends (nil: the machine closed its
// console, or the BMC ended the session), or ctx ends (ctx's error). It
// closes conn before it returns.
func Attach(ctx context.Context, conn io.ReadWriteCloser, in io.Reader, out io.Writer) error {
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
				// End of input: keep showing the console until the
				// machine closes it or ctx ends.
				return
			}
		}
	}()
	fromMachine := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, conn)
		fromMachine <- err
	}()
	select {
	case err := <-fromUser:
		return err
	case err := <-fromMachine:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
			return nil
		}
		return err
	}
}

// Session is a person's console session on in and out: it puts in in raw
// mode when it is a terminal, so that every key reaches the machine, runs
// attach, and says on msgs how the session ended; closed is the sentence
// for a far end that closed it. A detach or an interrupt is no error.
func Session(ctx context.Context, in io.Reader, out, msgs io.Writer, name, closed string,
	attach func(ctx context.Context, in io.Reader, out io.Writer) error) error {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		defer term.Restore(int(f.Fd()), old)
	}
	fmt.Fprintf(msgs, "Connected to %s's serial console. Ctrl-] leaves.\r\n", name)
	err := attach(ctx, in, out)
	switch {
	case errors.Is(err, ErrEscaped), errors.Is(err, context.Canceled):
		fmt.Fprint(msgs, "\r\nDetached.\r\n")
		return nil
	case err == nil:
		fmt.Fprintf(msgs, "\r\n%s.\r\n", closed)
		return nil
	}
	return err
}
