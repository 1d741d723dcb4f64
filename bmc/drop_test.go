package bmc_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
)

// droppingBMC accepts TCP connections and closes each at once, before
// reading a byte: a BMC whose web server crashes on every request.
func droppingBMC(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// RST rather than FIN: the peer sees the connection torn down.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String()
}

// truncatingBMC answers every request with headers promising a body, sends
// half of it and hangs up: a BMC that dies mid-answer.
func truncatingBMC(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj, ok := w.(http.Hijacker)
		if !ok {
			t.Error("response writer cannot be hijacked")
			return
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"@odata.id\":\"/redfish/v1/\",\"RedfishVer")
		_ = buf.Flush()
		conn.Close()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestFleetDroppedConnections: BMCs that drop the connection, before a
// byte or in the middle of an answer, fail only their own machines, as
// unreachable, with the machine and the BMC named; the healthy machine
// beside them is read. (Hangs, 500s, refused passwords and lying power
// states are in TestFleetFaultsStayWithTheirMachine.)
func TestFleetDroppedConnections(t *testing.T) {
	t.Parallel()
	log := testpeer.NewLog(t)
	healthy, _ := testpeer.VBMC(t, false, "admin", testPassword, log.Logger,
		virtual.MachineSpec{Name: "web-01", Machine: newFakeMachine()})
	addrs := map[string]string{"web-01": healthy, "dropper": droppingBMC(t), "truncator": truncatingBMC(t)}
	order := []string{"dropper", "web-01", "truncator"}
	var targets []bmc.Target
	for _, name := range order {
		c, err := bmc.New(bmc.Config{
			Machine: name, Protocol: "redfish", Address: addrs[name], System: name,
			Username: "admin", Password: testPassword, Timeout: 2 * time.Second, Retries: 2,
		}, log.Logger)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, bmc.Target{Name: name, Driver: c})
	}
	results := bmc.RunFleet(context.Background(), targets, bmc.FleetOptions{MachineTimeout: 20 * time.Second}, bmc.OpStatus)

	type outcome struct {
		Power       bmc.Power
		Unreachable bool
		Failed      bool
	}
	got := map[string]outcome{}
	for _, r := range results {
		got[r.Machine] = outcome{Power: r.Power, Unreachable: errors.Is(r.Err, bmc.ErrUnreachable), Failed: r.Err != nil}
		if r.Err != nil {
			for _, want := range []string{"machine " + r.Machine, addrs[r.Machine], "reachable"} {
				if !strings.Contains(r.Error, want) {
					t.Errorf("%s: error lacks %q: %s", r.Machine, want, r.Error)
				}
			}
		}
	}
	want := map[string]outcome{
		"web-01":    {Power: bmc.PowerOff},
		"dropper":   {Unreachable: true, Failed: true},
		"truncator": {Unreachable: true, Failed: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		for _, r := range results {
			t.Logf("%s: %v", r.Machine, r.Err)
		}
		t.Errorf("fleet outcomes (-want +got):\n%s", diff)
	}
	var errs []string
	for _, r := range results {
		errs = append(errs, r.Error)
	}
	assertNoSecret(t, strings.Join(errs, "\n"), log.String())
}
