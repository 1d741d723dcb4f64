package ipmisim_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/ipmisim"
	"github.com/metal-dev/metal/internal/syncbuf"
)

// TestSOLThroughLineSurvivesPowerCycles: a machine that prints a line and
// powers off at once, again and again, as the lab's OS does, wired to
// ipmi_sim's Serial-over-LAN through ServeLine. Each power cycle's line
// comes through SOL, however late the SOL client's acks are: ipmi_sim
// wired straight to the machine's socket goes dark for good when the
// socket closes before the last packet's ack. Keys typed over SOL reach
// the machine.
func TestSOLThroughLineSurvivesPowerCycles(t *testing.T) {
	testpeer.Need(t, "ipmitool", "ipmitool")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bmcEnd, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "line.sock")
	machineEnd, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	log := testpeer.NewLog(t)
	served := make(chan error, 1)
	lineCtx, stopLine := context.WithCancel(ctx)
	go func() { served <- ipmisim.ServeLine(lineCtx, bmcEnd, machineEnd, log.Logger) }()
	defer func() {
		stopLine()
		if err := <-served; err != nil {
			t.Errorf("ServeLine: %v", err)
		}
	}()

	_, sim := testpeer.RunIPMISim(t, ipmisim.Config{Name: "line", Username: "admin", Password: password,
		SOL: "tcp:" + bmcEnd.Addr().String(), QEMU: []string{"false"}, Log: log.Logger})
	c, err := bmc.New(bmc.Config{Machine: "line", Protocol: bmc.ProtocolIPMI, Address: sim.Addr(),
		Username: "admin", Password: password, Timeout: 20 * time.Second}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	con, err := c.SerialConsole(ctx, bmc.ConsoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	sol := &syncbuf.Buffer{}
	go func() { _, _ = io.Copy(sol, con) }()

	var d net.Dialer
	for i := 1; i <= 4; i++ {
		m, err := d.DialContext(ctx, "unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("power cycle %d done", i)
		_, err = m.Write([]byte(want + "\r\n"))
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !waitFor(ctx, sol, want) {
			t.Fatalf("SOL never showed %q; it showed %q", want, sol)
		}
	}

	// Powered on for good: what is typed over SOL reaches the machine.
	m, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	typed := &syncbuf.Buffer{}
	go func() { _, _ = io.Copy(typed, m) }()
	for !strings.Contains(typed.String(), "typed over SOL") {
		if ctx.Err() != nil {
			t.Fatalf("the machine never read the keys typed over SOL; it read %q", typed)
		}
		if _, err := con.Write([]byte("typed over SOL\r")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
}

// waitFor reports whether buf comes to hold want before ctx ends.
func waitFor(ctx context.Context, buf *syncbuf.Buffer, want string) bool {
	for !strings.Contains(buf.String(), want) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}
