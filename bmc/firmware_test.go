package bmc_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
)

// serveFiles serves path -> content over HTTP on loopback, as metal's
// own HTTP server serves firmware images to BMCs.
func serveFiles(t *testing.T, files map[string][]byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// waitTask polls the task until it ends.
func waitTask(ctx context.Context, t *testing.T, c *bmc.Client, task bmc.Task) bmc.Task {
	t.Helper()
	for !task.Done() {
		select {
		case <-ctx.Done():
			t.Fatalf("task %s did not end: %+v", task.URI, task)
		case <-time.After(50 * time.Millisecond):
		}
		var err error
		if task, err = c.Task(ctx, task.URI); err != nil {
			t.Fatal(err)
		}
	}
	return task
}

// TestFirmwareUpdate updates the virtual BMC's BIOS through SimpleUpdate
// (the BMC pulls the image over HTTP) and through a multipart push (the
// client fetches and sends it), follows the task to its end and reads the
// new version back; a corrupt image or one for another component fails
// the task with the BMC's reason and changes nothing.
func TestFirmwareUpdate(t *testing.T) {
	files := serveFiles(t, map[string][]byte{
		"/bios-1.17.0.bin": virtual.FirmwareImage("BIOS", "1.17.0", []byte("new bios")),
		"/bmc-2.0.bin":     virtual.FirmwareImage("BMC", "2.0", []byte("new bmc")),
		"/corrupt.bin":     append(virtual.FirmwareImage("BIOS", "1.18.0", []byte("payload")), 'x'),
	})
	for name, tc := range map[string]struct {
		opts    virtual.Options
		image   string
		want    string // BIOS version after
		failure string // in the task's message
	}{
		"simple update":  {image: "/bios-1.17.0.bin", want: "1.17.0"},
		"multipart push": {opts: virtual.Options{NoSimpleUpdate: true}, image: "/bios-1.17.0.bin", want: "1.17.0"},
		"corrupt image":  {image: "/corrupt.bin", want: "1.16.2", failure: "corrupt"},
		"another part's": {image: "/bmc-2.0.bin", want: "1.16.2", failure: "is for BMC, not BIOS"},
		"missing image":  {image: "/nothing.bin", want: "1.16.2", failure: "404"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			log := testpeer.NewLog(t)
			opts := tc.opts
			opts.Username, opts.Password, opts.Log, opts.FlashTime = "admin", testPassword, log.Logger, 100*time.Millisecond
			spec := virtual.MachineSpec{Name: "fw-01", Machine: virtual.NewSim(virtual.SimOptions{Name: "fw-01"})}
			url, _ := testpeer.VBMCWith(t, false, opts, spec)
			c := firmwareClient(t, url, "fw-01")
			before, err := c.Firmware(ctx, "bios")
			if err != nil || before.Version != "1.16.2" || !before.Updateable {
				t.Fatalf("BIOS before: %+v, %v", before, err)
			}
			task, err := c.UpdateFirmware(ctx, "BIOS", files+tc.image)
			if err != nil {
				t.Fatal(err)
			}
			task = waitTask(ctx, t, c, task)
			if task.Failed() != (tc.failure != "") || !strings.Contains(task.Message, tc.failure) {
				t.Errorf("task: %+v, want failure %q", task, tc.failure)
			}
			after, err := c.Firmware(ctx, "BIOS")
			if err != nil || after.Version != tc.want {
				t.Errorf("BIOS after: %+v, %v; want %s", after, err, tc.want)
			}
		})
	}
}

// TestFirmwareUpdateFoundRunning: asked again for an update of the same
// image while the BMC still runs it (metal was killed and resumed), the
// client follows the running task instead of flashing twice; the new
// version outlives a restart of the BMC (StateDir).
func TestFirmwareUpdateFoundRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	image := "/bios-1.17.0.bin"
	files := serveFiles(t, map[string][]byte{image: virtual.FirmwareImage("BIOS", "1.17.0", []byte("new bios"))})
	log := testpeer.NewLog(t)
	dir := t.TempDir()
	spec := virtual.MachineSpec{Name: "fw-02", Machine: virtual.NewSim(virtual.SimOptions{Name: "fw-02"})}
	opts := virtual.Options{Username: "admin", Password: testPassword, Log: log.Logger, StateDir: dir, FlashTime: 3 * time.Second}
	srv, err := virtual.NewServer(opts, spec)
	if err != nil {
		t.Fatal(err)
	}
	url, stop := serveVBMC(t, srv)
	c := firmwareClient(t, url, "fw-02")
	first, err := c.UpdateFirmware(ctx, "BIOS", files+image)
	if err != nil || first.Resumed {
		t.Fatalf("first update: %+v, %v", first, err)
	}
	again, err := c.UpdateFirmware(ctx, "BIOS", files+image)
	if err != nil || !again.Resumed || again.URI != first.URI {
		t.Fatalf("second request while the first runs: %+v, %v (first %+v)", again, err, first)
	}
	if done := waitTask(ctx, t, c, again); done.Failed() {
		t.Fatalf("task: %+v", done)
	}
	if v, flashes := srv.Firmware("fw-02"); v["BIOS"] != "1.17.0" || flashes != 1 {
		t.Fatalf("versions %v after %d flashes, want BIOS 1.17.0 after 1", v, flashes)
	}
	stop()

	srv2, err := virtual.NewServer(opts, spec)
	if err != nil {
		t.Fatal(err)
	}
	url2, _ := serveVBMC(t, srv2)
	fw, err := firmwareClient(t, url2, "fw-02").Firmware(ctx, "BIOS")
	if err != nil || fw.Version != "1.17.0" {
		t.Errorf("BIOS after the BMC restarted: %+v, %v", fw, err)
	}
}

// TestFirmwareUnknownComponent: a component the BMC does not list is an
// error that names what it has.
func TestFirmwareUnknownComponent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := testpeer.NewLog(t)
	url, _ := testpeer.VBMC(t, false, "admin", testPassword, log.Logger, virtual.MachineSpec{Name: "fw-03", Machine: virtual.NewSim(virtual.SimOptions{Name: "fw-03"})})
	_, err := firmwareClient(t, url, "fw-03").Firmware(ctx, "NIC1")
	if err == nil || !strings.Contains(err.Error(), "no component NIC1 (it has BIOS, BMC)") {
		t.Errorf("unknown component: %v", err)
	}
	ipmi, _ := bmc.New(bmc.Config{Machine: "i", Protocol: "ipmi", Address: "127.0.0.1:1", Username: "u", Password: "p"}, nil)
	if _, err := ipmi.UpdateFirmware(ctx, "BIOS", "http://x/y"); !errors.Is(err, bmc.ErrUnsupported) {
		t.Errorf("firmware over IPMI: %v", err)
	}
}

func firmwareClient(t *testing.T, url, system string) *bmc.Client {
	t.Helper()
	c, err := bmc.New(bmc.Config{
		Machine: system, Protocol: "redfish", Address: url, System: system,
		Username: "admin", Password: testPassword, Timeout: 5 * time.Second, Retries: 1,
	}, testpeer.NewLog(t).Logger)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serveVBMC serves srv on loopback until stop (or the test's end).
func serveVBMC(t *testing.T, srv *virtual.Server) (url string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, nil) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}
