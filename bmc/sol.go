package bmc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/metal-dev/metal/internal/syncbuf"
)

// ErrConsoleBusy says another serial-over-LAN session holds the console:
// IPMI allows one at a time.
var ErrConsoleBusy = errors.New("another serial-over-LAN session holds the console")

// ConsoleOptions qualify SerialConsole.
type ConsoleOptions struct {
	// Steal ends another session holding the console first (ipmitool sol
	// deactivate), as a BMC's own web console does when asked to.
	Steal bool
}

// solBanner is what ipmitool prints once the SOL payload is active;
// everything after its line is the machine's serial output.
const solBanner = "[SOL Session operational"

// solEscape is ipmitool's escape character: after a newline, "~." ends
// the session, "~B" sends a break, "~?" prints help, and "~~" sends one
// "~". The console stream must carry every byte as typed, so Write
// doubles the escapes that ipmitool would otherwise act on.
const solEscape = '~'

// SerialConsole attaches to the machine's serial console through the BMC's
// IPMI Serial-over-LAN (ipmitool's "sol activate" runs as a child, as
// bmclib has no SOL of its own). Reads return what the machine prints,
// writes reach its serial input byte for byte, and Close ends the session
// (the BMC frees the console for the next one). A BMC without SOL fails
// with ErrUnsupported, one whose console is taken with ErrConsoleBusy.
func (c *Client) SerialConsole(ctx context.Context, opts ConsoleOptions) (io.ReadWriteCloser, error) {
	const op = "serial console"
	if c.cfg.Protocol == ProtocolRedfish {
		return nil, c.fail(op, ErrUnsupported, errors.New("metal's serial console speaks IPMI Serial-over-LAN and this BMC is configured for Redfish"),
			`set the machine's bmc protocol to "ipmi" (or "auto") if its BMC also answers IPMI over LAN`)
	}
	addr := c.displayAddr(ProtocolIPMI)
	if opts.Steal {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		_, err := c.ipmitool(ctx, "sol", "deactivate")
		cancel()
		// "already de-activated" is the usual answer and no failure.
		if err != nil && !strings.Contains(strings.ToLower(err.Error()), "de-activated") {
			c.log.Debug("bmc sol deactivate failed", "err", c.redact.scrub(err.Error()))
		}
	}
	start := time.Now()
	// Not bound to ctx: the session lives until Close.
	cmd, err := c.ipmitoolCmd(context.Background(), "sol", "activate")
	if err != nil {
		return nil, c.fail(op, nil, err, "")
	}
	// ipmitool gets a terminal: on a pipe its output is block-buffered
	// (the banner would wait for the machine's first output) and its
	// input could not be put in raw mode. The terminal is raw before it
	// starts, so no byte typed early is echoed or translated.
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, c.fail(op, nil, fmt.Errorf("open a terminal for ipmitool: %w", err), "")
	}
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil {
		ptmx.Close()
		tty.Close()
		return nil, c.fail(op, nil, fmt.Errorf("raw terminal for ipmitool: %w", err), "")
	}
	s := &solConn{c: c, cmd: cmd, pty: ptmx, out: bufio.NewReader(ptmx), stderr: &syncbuf.Buffer{}, lastWasNewline: true, exited: make(chan struct{})}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, s.stderr
	err = cmd.Start()
	// Only ipmitool holds its end now, so ours reads EIO when it exits.
	tty.Close()
	if err != nil {
		ptmx.Close()
		return nil, c.fail(op, nil, err, "is ipmitool installed? (apt-get install ipmitool)")
	}
	go func() { _ = cmd.Wait(); close(s.exited) }()

	banner := make(chan error, 1)
	go func() { banner <- s.readBanner() }()
	wait, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	select {
	case err = <-banner:
	case <-wait.Done():
		err = wait.Err()
	}
	if err == nil {
		c.log.Info("bmc serial console attached", "took", time.Since(start).Round(time.Millisecond))
		return s, nil
	}
	s.kill()
	s.pty.Close()
	if wait.Err() != nil {
		<-banner // ends now its terminal is closed; s.before is complete
	}
	said := strings.TrimSpace(s.before.String() + "\n" + s.stderr.String())
	switch low := strings.ToLower(said); {
	case wait.Err() != nil:
		return nil, c.fail(op, ErrTimeout, errors.New("no serial-over-LAN session within "+c.cfg.Timeout.String()),
			fmt.Sprintf("is the BMC reachable at %s over UDP, with IPMI over LAN enabled?", addr))
	case strings.Contains(low, "already active"):
		return nil, c.fail(op, ErrConsoleBusy, errors.New(oneLine(said)),
			"someone else is attached (another metal console, metal serve's web terminal, or an ipmitool); --steal ends their session")
	case strings.Contains(low, "invalid command"), strings.Contains(low, "not supported"),
		strings.Contains(low, "payload disabled"):
		return nil, c.fail(op, ErrUnsupported, fmt.Errorf("the BMC has no serial-over-LAN: %s", oneLine(said)),
			"enable SOL on the BMC (ipmitool sol set enabled true, or its web interface), or use the machine's own serial port")
	}
	if said == "" {
		said = err.Error()
	}
	f := classify(errors.New(said), time.Since(start), ProtocolIPMI, addr)
	return nil, c.fail(op, f.kind, f.cause, f.hint)
}

// solConn is one ipmitool "sol activate" session.
type solConn struct {
	c      *Client
	cmd    *exec.Cmd
	pty    *os.File // ipmitool's terminal, our end
	out    *bufio.Reader
	before bytes.Buffer // what ipmitool printed before the banner
	stderr *syncbuf.Buffer
	exited chan struct{}

	wmu            sync.Mutex
	lastWasNewline bool // as ipmitool's escape parser sees it

	once sync.Once
}

// readBanner consumes ipmitool's line saying the session is up. Nothing the
// machine printed comes before it. An end before it is the failure, and
// what came before it says why.
func (s *solConn) readBanner() error {
	for {
		line, err := s.out.ReadString('\n')
		if strings.Contains(line, solBanner) {
			return nil
		}
		s.before.WriteString(line)
		if err != nil {
			return fmt.Errorf("ipmitool ended before the session was up: %w", err)
		}
	}
}

// Read returns what the machine printed; io.EOF once the session ended
// (a terminal whose other side closed reads EIO).
func (s *solConn) Read(p []byte) (int, error) {
	n, err := s.out.Read(p)
	if errors.Is(err, syscall.EIO) || errors.Is(err, os.ErrClosed) {
		err = io.EOF
	}
	return n, err
}

// Write sends p to the machine's serial input, doubling each escape
// character that ipmitool would take as the start of a command.
func (s *solConn) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	buf := make([]byte, 0, len(p)+4)
	for _, b := range p {
		if b == solEscape && s.lastWasNewline {
			buf = append(buf, solEscape, solEscape)
			s.lastWasNewline = false
			continue
		}
		buf = append(buf, b)
		s.lastWasNewline = b == '\r' || b == '\n'
	}
	if _, err := s.pty.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close ends the session. ipmitool is stopped and the payload deactivated
// by a call of its own, so the BMC takes the next session at once
// instead of after its session timeout. (ipmitool's own "~." would need
// a newline first, which would reach the machine.)
func (s *solConn) Close() error {
	s.once.Do(func() {
		s.kill()
		s.pty.Close()
		ctx, cancel := context.WithTimeout(context.Background(), s.c.cfg.Timeout)
		defer cancel()
		if _, err := s.c.ipmitool(ctx, "sol", "deactivate"); err != nil {
			s.c.log.Debug("bmc sol deactivate after close", "err", s.c.redact.scrub(err.Error()))
		}
	})
	return nil
}

func (s *solConn) kill() {
	_ = s.cmd.Process.Kill() // our own child, by its pid
	<-s.exited
}
