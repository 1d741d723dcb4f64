package bmc_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/ipmisim"
	"github.com/metal-dev/metal/bmc/ipmisim/ipmisimtest"
)

// reader gathers what one stream gives, from one goroutine, so that no
// byte is lost between two waits.
type reader struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ended bool
	more  chan struct{}
}

func newReader(r io.Reader) *reader {
	rd := &reader{more: make(chan struct{}, 1)}
	go func() {
		b := make([]byte, 512)
		for {
			n, err := r.Read(b)
			rd.mu.Lock()
			rd.buf.Write(b[:n])
			rd.ended = err != nil
			rd.mu.Unlock()
			select {
			case rd.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return rd
}

// readFor waits until the stream has given want, and returns (and
// consumes) everything up to and including it. A stream that ends or
// says nothing for long fails the test.
func readFor(t *testing.T, rd *reader, want string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		rd.mu.Lock()
		if i := bytes.Index(rd.buf.Bytes(), []byte(want)); i >= 0 {
			got := string(rd.buf.Next(i + len(want)))
			rd.mu.Unlock()
			return got
		}
		ended, so := rd.ended, rd.buf.String()
		rd.mu.Unlock()
		if ended {
			t.Fatalf("stream ended before %q; got %q", want, so)
		}
		select {
		case <-rd.more:
		case <-timeout:
			t.Fatalf("no %q in 30 s; got %q", want, so)
		}
	}
}

// TestSerialOverLAN attaches to a machine's serial console through
// ipmi_sim's IPMI Serial-over-LAN: what the machine prints arrives, what
// is typed reaches the machine byte for byte (ipmitool's "~." and "~?"
// escapes included), closing frees the console for the next session, a
// second session finds the console busy unless it steals it, and a BMC
// without SOL says so.
func TestSerialOverLAN(t *testing.T) {
	t.Parallel()
	machine, device := ipmisimtest.SerialLine(t)
	sim := testpeer.StartIPMISimWith(t, ipmisim.Config{Username: "admin", Password: testPassword, SOL: device})
	log := testpeer.NewLog(t)
	c, err := bmc.New(bmc.Config{Machine: "sol-01", Protocol: "ipmi", Address: sim.Addr,
		Username: "admin", Password: testPassword, Timeout: 20 * time.Second}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	con, err := c.SerialConsole(ctx, bmc.ConsoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := machine.Write([]byte("Debian GNU/Linux 12 sol-01 ttyS0\r\nsol-01 login: ")); err != nil {
		t.Fatal(err)
	}
	out := newReader(con)
	readFor(t, out, "sol-01 login: ")

	// Escapes ipmitool would act on at the start of a line: "~." would
	// end the session, "~?" print help, "~~" send one "~".
	typed := "root\r~.\r~?~~\n~B and ~ mid-line\r"
	if _, err := con.Write([]byte(typed)); err != nil {
		t.Fatal(err)
	}
	in := newReader(machine)
	if got := readFor(t, in, "mid-line\r"); got != typed {
		t.Errorf("the machine got %q, want %q", got, typed)
	}
	if _, err := machine.Write([]byte("still here\r\n")); err != nil {
		t.Fatal(err)
	}
	readFor(t, out, "still here")

	// IPMI allows one session; a second is refused while the first holds
	// the console, and takes it over when asked to.
	c2, err := bmc.New(bmc.Config{Machine: "sol-01", Protocol: "ipmi", Address: sim.Addr,
		Username: "admin", Password: testPassword, Timeout: 20 * time.Second}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.SerialConsole(ctx, bmc.ConsoleOptions{}); !errors.Is(err, bmc.ErrConsoleBusy) {
		t.Errorf("second session: %v, want ErrConsoleBusy", err)
	} else if !strings.Contains(err.Error(), "--steal") {
		t.Errorf("busy error does not say how to take over: %v", err)
	}
	con.Close()

	// Closing freed the payload: the next session needs no stealing.
	con, err = c2.SerialConsole(ctx, bmc.ConsoleOptions{})
	if err != nil {
		t.Fatalf("attach after close: %v", err)
	}
	if _, err := machine.Write([]byte("second session\r\n")); err != nil {
		t.Fatal(err)
	}
	readFor(t, newReader(con), "second session")
	stolen, err := c.SerialConsole(ctx, bmc.ConsoleOptions{Steal: true})
	if err != nil {
		t.Fatalf("steal: %v", err)
	}
	defer stolen.Close()
	if _, err := machine.Write([]byte("after steal\r\n")); err != nil {
		t.Fatal(err)
	}
	readFor(t, newReader(stolen), "after steal")
	con.Close()
	assertNoSecret(t, log.String())
}

// TestSerialOverLANUnsupported: a BMC without SOL fails with
// ErrUnsupported and a message that says what is missing.
func TestSerialOverLANUnsupported(t *testing.T) {
	t.Parallel()
	sim := testpeer.StartIPMISim(t, "admin", testPassword)
	c, err := bmc.New(bmc.Config{Machine: "nosol-01", Protocol: "ipmi", Address: sim.Addr,
		Username: "admin", Password: testPassword, Timeout: 20 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SerialConsole(context.Background(), bmc.ConsoleOptions{})
	if !errors.Is(err, bmc.ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
	for _, want := range []string{"nosol-01", "no serial-over-LAN", "enable SOL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	rf, err := bmc.New(bmc.Config{Machine: "rf-01", Protocol: "redfish", Address: "http://127.0.0.1:1", Username: "u", Password: "p"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rf.SerialConsole(context.Background(), bmc.ConsoleOptions{}); !errors.Is(err, bmc.ErrUnsupported) {
		t.Errorf("Redfish BMC: %v, want ErrUnsupported", err)
	}
}
