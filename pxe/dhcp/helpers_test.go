package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// testPolicy is a fixed BootPolicy: declared hosts, each with an intent;
// unknown MACs get unknownIntent.
type testPolicy struct {
	hosts         map[string]pxe.Host
	intents       map[string]pxe.Intent
	unknownIntent pxe.Intent
}

func newTestPolicy(hosts ...pxe.Host) *testPolicy {
	p := &testPolicy{
		hosts:         map[string]pxe.Host{},
		intents:       map[string]pxe.Intent{},
		unknownIntent: pxe.Intent{Action: pxe.ActionDiscover},
	}
	for _, h := range hosts {
		p.hosts[h.MAC.String()] = h
		p.intents[h.MAC.String()] = pxe.Intent{Action: pxe.ActionInstall}
	}
	return p
}

func (p *testPolicy) Host(_ context.Context, mac net.HardwareAddr) (pxe.Host, error) {
	h, ok := p.hosts[mac.String()]
	if !ok {
		return pxe.Host{}, pxe.ErrUnknownHost
	}
	return h, nil
}

func (p *testPolicy) Intent(_ context.Context, mac net.HardwareAddr) (pxe.Intent, error) {
	if i, ok := p.intents[mac.String()]; ok {
		return i, nil
	}
	return p.unknownIntent, nil
}

// DeclaredMACs lists the declared hosts' MACs, which never change.
func (p *testPolicy) DeclaredMACs() ([]net.HardwareAddr, <-chan struct{}) {
	var macs []net.HardwareAddr
	for _, h := range p.hosts {
		macs = append(macs, h.MAC)
	}
	return macs, nil
}

// errPolicy fails every question, as a broken inventory would.
type errPolicy struct{}

func (errPolicy) Host(context.Context, net.HardwareAddr) (pxe.Host, error) {
	return pxe.Host{}, errors.New("inventory down")
}
func (errPolicy) Intent(context.Context, net.HardwareAddr) (pxe.Intent, error) {
	return pxe.Intent{}, errors.New("inventory down")
}

// tlog is a slog handler writing through t.Log.
func tlog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// labConfig is a full-mode config for a pxetest lab: the lab's bridge and
// subnet, pool .100-.199.
func labConfig() Config {
	return Config{
		Interface: pxetest.BridgeName,
		ServerIP:  pxetest.ServerIP,
		Subnets: []Subnet{{
			CIDR:      pxetest.LabSubnet,
			Gateway:   netip.MustParseAddr("192.0.2.254"),
			DNS:       []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("192.0.2.54")},
			Domain:    "lab.example",
			PoolStart: netip.MustParseAddr("192.0.2.100"),
			PoolEnd:   netip.MustParseAddr("192.0.2.199"),
			LeaseTime: 10 * time.Minute,
		}},
		HTTPBaseURL: "http://192.0.2.1:8080",
	}
}

// startServer runs a server inside the lab namespace until the test ends,
// and returns once its port 67 is bound, with a function that stops it
// earlier (to restart it).
func startServer(t *testing.T, lab *pxetest.Lab, cfg Config, policy pxe.BootPolicy, store LeaseStore) (*Server, func()) {
	t.Helper()
	srv, err := NewServer(cfg, policy, store, tlog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lab.NS().Do(func() error { return srv.Serve(ctx) }) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(stop)
	// Wait until the server has its sockets. (Not by looking for a socket
	// on port 67 in the namespace: one a server closed can linger there a
	// moment, kept by a child process forked before the close.)
	select {
	case <-srv.Listening():
	case err := <-done:
		stopped = true
		if errors.Is(err, syscall.EADDRINUSE) { // say who holds the port
			out, _ := exec.Command("ip", "netns", "exec", lab.NS().Name, "ss", "-uapn").CombinedOutput()
			t.Fatalf("server stopped at once: %v\n%s", err, out)
		}
		t.Fatalf("server stopped at once: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not bind port 67 within 10s")
	}
	return srv, stop
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// udpBound reports whether a UDP socket in ns is bound to port.
func udpBound(t testing.TB, ns *pxetest.Netns, port int) bool {
	var table []byte
	err := ns.Do(func() error {
		var err error
		table, err = os.ReadFile("/proc/thread-self/net/udp") // this thread's namespace
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(table), fmt.Sprintf(":%04X ", port))
}
