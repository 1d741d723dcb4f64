package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// buildMetal builds the metal binary once per test run, for tests that
// must run it as a process (inside a network namespace). Such a test runs
// long: a -short run skips it here.
func buildMetal(t *testing.T) string {
	t.Helper()
	testenv.Long(t, "metal as a process")
	bin, err := testenv.BuildMetal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestServeEndToEnd runs `metal serve` on a lab network and boots nothing
// but real clients against it: busybox udhcpc gets the machine's
// reservation with the boot options, tftp-hpa fetches iPXE, curl fetches the
// machine's iPXE script, built from the boot intent in the state store, and
// the kernel it names; the fetches land in the machine's boot timeline. An
// undeclared MAC gets a pool address, and its request for the declared
// machine's script is refused.
func TestServeEndToEnd(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	pxetest.RequireTool(t, "tftp", "tftp-hpa")
	pxetest.RequireTool(t, "curl", "curl")
	metalBin := buildMetal(t)
	lab := pxetest.NewLab(t)
	known := lab.AddHost("m1", pxetest.MAC(1))
	stranger := lab.AddHost("u1", pxetest.MAC(2))

	dir := t.TempDir()
	kernel := []byte("a kernel the test made\n")
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	sitePath := labSite(t, dir, "e2e", fmt.Sprintf(`
image "live" {
  kernel  = "vmlinuz"
  cmdline = "console=ttyS0 metal.marker=e2e"
}
machine "m1" {
  mac   = %q
  ip    = "192.0.2.11"
  image = image.live
}
`, pxetest.MAC(1).String()))
	// The boot intent the converge engine would write: the servers answer
	// from the store, never from the site file.
	statePath := filepath.Join(dir, "state", "state.db")
	withStore(t, statePath, func(ctx context.Context, store inventory.Store) {
		if _, err := store.PutMachine(ctx, inventory.Machine{Name: "m1", MAC: pxetest.MAC(1).String(),
			State: inventory.StateProvisioning, Intent: inventory.BootIntent{Action: inventory.BootInstall,
				Kernel: "/images/live/vmlinuz", Cmdline: "console=ttyS0 metal.marker=e2e"}}); err != nil {
			t.Fatal(err)
		}
	})
	srv := lab.NS().Start(metalBin, "serve", "--tftp-addr", "192.0.2.1:69", sitePath)

	// DHCP: retry while the daemon starts.
	// The known host says it is a BIOS PXE ROM, so it is told where iPXE is.
	env := leaseWithRetry(t, known, srv, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
	want := map[string]string{"ip": "192.0.2.11", "router": "192.0.2.1", "dns": "192.0.2.1", "domain": "lab.test",
		"hostname": "m1", "siaddr": "192.0.2.1", "boot_file": "undionly.kpxe"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("lease %s = %q, want %q (lease: %v)", k, env[k], v, env)
		}
	}

	// TFTP: the iPXE binary, byte for byte.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := filepath.Join(dir, "undionly.kpxe")
	if out, err := known.Command(ctx, "tftp", "192.0.2.1", "-m", "binary", "-c", "get", "undionly.kpxe", got).CombinedOutput(); err != nil {
		t.Fatalf("tftp: %v\n%s", err, out)
	}
	a, _ := os.ReadFile(got)
	b, err := os.ReadFile("/usr/lib/ipxe/undionly.kpxe")
	if err != nil || string(a) != string(b) {
		t.Fatalf("tftp fetched %d bytes, /usr/lib/ipxe/undionly.kpxe has %d (%v)", len(a), len(b), err)
	}

	// HTTP: the machine's script names the staged kernel; the kernel is
	// served from metal's state directory.
	script := curl(t, known, "http://192.0.2.1:8080/ipxe/"+pxetest.MAC(1).String())
	for _, w := range []string{"#!ipxe", "http://192.0.2.1:8080/images/live/vmlinuz", "metal.marker=e2e"} {
		if !strings.Contains(script, w) {
			t.Errorf("script lacks %q:\n%s", w, script)
		}
	}
	if body := curl(t, known, "http://192.0.2.1:8080/images/live/vmlinuz"); body != string(kernel) {
		t.Errorf("kernel over HTTP = %q", body)
	}

	// The console, API and metrics are not on the boot network: a machine
	// there finds none of them; on the server's loopback (the default
	// --api-listen) the API wants a token and metrics count what just
	// happened.
	for _, path := range []string{"/api/v1/machines", "/console/", "/metrics"} {
		if code := httpCode(t, known, "http://192.0.2.1:8080"+path); code != "404" {
			t.Errorf("boot network GET %s: HTTP %s, want 404", path, code)
		}
	}
	if code := httpCode(t, lab.NS(), "http://127.0.0.1:9090/api/v1/machines"); code != "401" {
		t.Errorf("API without a token: HTTP %s, want 401", code)
	}
	if code := httpCode(t, lab.NS(), "http://127.0.0.1:9090/console/"); code != "200" && code != "303" {
		t.Errorf("console: HTTP %s, want the page or a redirect to its login", code)
	}
	if m := curl(t, lab.NS(), "http://127.0.0.1:9090/metrics"); !strings.Contains(m, "metal_dhcp_packets_total") ||
		!strings.Contains(m, "metal_tftp_transfers_total") {
		t.Errorf("metrics lack DHCP and TFTP counters:\n%s", m)
	} else if !strings.Contains(m, `metal_http_requests_total{code="4xx",route="api"} 2`+"\n") {
		t.Errorf("the refused API requests (one on each listener) are not counted exactly once:\n%s", m)
	}

	// While serve holds the embedded store, the read verbs ask it over
	// the socket in its state directory.
	if code, stdout, stderr := metal(t, nil, "machines", "--site", sitePath); code != 0 ||
		!strings.Contains(stdout, "m1") || !strings.Contains(stdout, "provisioning") {
		t.Errorf("metal machines while serve runs: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := metal(t, nil, "events", "--site", sitePath, "--machine", "m1"); code != 0 ||
		!strings.Contains(stdout, "kernel") {
		t.Errorf("metal events while serve runs: exit %d\n%s%s", code, stdout, stderr)
	}

	// Tokens while serve holds the store: made, listed and revoked over
	// its socket; a read token reads but cannot act; a revoked one is
	// refused at its next request.
	code, secret, stderr := metal(t, nil, "token", "create", "--site", sitePath, "--role", "read", "--name", "viewer")
	secret = strings.TrimSpace(secret)
	if code != 0 || !strings.HasPrefix(secret, "metal_") {
		t.Fatalf("metal token create while serve runs: exit %d\n%s%s", code, secret, stderr)
	}
	bearer := func(method, path string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, _ := lab.NS().Command(ctx, "curl", "-s", "-X", method, "-H", "Authorization: Bearer "+secret,
			"-H", "Content-Type: application/json", "--data-binary", `{"action":"power-cycle","machine":"m1"}`,
			"-w", " %{http_code}", "http://127.0.0.1:9090"+path).Output()
		return string(out)
	}
	if got := bearer("GET", "/api/v1/whoami"); !strings.HasSuffix(got, " 200") {
		t.Errorf("whoami with a read token: %s", got)
	}
	if got := bearer("POST", "/api/v1/actions"); !strings.HasSuffix(got, " 403") || !strings.Contains(got, "needs role operate") {
		t.Errorf("action with a read token: %s, want 403 naming role operate", got)
	}
	if code, stdout, stderr := metal(t, nil, "token", "list", "--site", sitePath); code != 0 ||
		!strings.Contains(stdout, "viewer") || !strings.Contains(stdout, "read") || strings.Contains(stdout, secret) {
		t.Errorf("metal token list while serve runs: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := metal(t, nil, "token", "revoke", "--site", sitePath, "viewer"); code != 0 {
		t.Errorf("metal token revoke while serve runs: exit %d\n%s%s", code, stdout, stderr)
	}
	if got := bearer("GET", "/api/v1/whoami"); !strings.HasSuffix(got, " 401") {
		t.Errorf("whoami with a revoked token: %s, want 401", got)
	}

	// An undeclared machine: a pool address, and no access to m1's script.
	env = leaseWithRetry(t, stranger, srv)
	if env["boot_file"] != "" {
		t.Errorf("a client that is not PXE was given boot file %q", env["boot_file"])
	}
	if !strings.HasPrefix(env["ip"], "192.0.2.1") || env["ip"] == "192.0.2.11" || env["ip"] == "192.0.2.1" {
		t.Errorf("stranger got %q, want a pool address", env["ip"])
	}
	out, _ := stranger.Command(ctx, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://192.0.2.1:8080/ipxe/"+pxetest.MAC(1).String()).Output()
	if string(out) != "403" {
		t.Errorf("stranger fetching m1's script: HTTP %s, want 403", out)
	}

	// Leases survive a restart: the stranger keeps its address.
	srv.Stop()
	srv = lab.NS().Start(metalBin, "serve", "--tftp-addr", "192.0.2.1:69", sitePath)
	if again := leaseWithRetry(t, stranger, srv); again["ip"] != env["ip"] {
		t.Errorf("after restart the stranger got %q, had %q", again["ip"], env["ip"])
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "leases-lab.json")); err != nil {
		t.Errorf("no lease file: %v", err)
	}

	// The boot timeline: m1's script and kernel fetches are events.
	srv.Stop()
	wantBootFetches(t, statePath, "m1")
}

// wantBootFetches checks that machine's boot timeline in the store at
// statePath (metal serve stopped) holds its script and kernel fetches.
func wantBootFetches(t *testing.T, statePath, machine string) {
	t.Helper()
	withStore(t, statePath, func(ctx context.Context, store inventory.Store) {
		evs, err := store.Events(ctx, inventory.EventQuery{Machine: machine})
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[inventory.EventKind]bool{}
		for _, e := range evs {
			kinds[e.Kind] = true
		}
		if !kinds[inventory.EventScript] || !kinds[inventory.EventKernel] {
			t.Errorf("%s's events %+v lack the script and kernel fetches", machine, evs)
		}
	})
}

// labSite writes dir/site.hcl for a `metal serve` in the test lab: the
// site name with its state under dir/state and its HTTP on the bridge, the
// lab network with a pool, and the blocks in more.
func labSite(t *testing.T, dir, name, more string) string {
	t.Helper()
	p := filepath.Join(dir, "site.hcl")
	if err := os.WriteFile(p, fmt.Appendf(nil, `
site %q {
  state  = "file://state/state.db"
  listen = "192.0.2.1:8080"
}
network "lab" {
  interface = %q
  subnet    = "192.0.2.0/24"
  gateway   = "192.0.2.1"
  dns       = ["192.0.2.1"]
  domain    = "lab.test"
  pool      = "192.0.2.100-192.0.2.150"
}
%s`, name, pxetest.BridgeName, more), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// withStore opens the bbolt state store at path (metal serve must not be
// running) for fn.
func withStore(t *testing.T, path string, fn func(context.Context, inventory.Store)) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := backend.Open(ctx, "file://"+path, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	fn(ctx, store)
}

// leaseWithRetry runs udhcpc until it gets a lease (the daemon may still be
// starting) and returns the environment its script saw.
func leaseWithRetry(t *testing.T, ns *pxetest.Netns, srv *pxetest.Process, extra ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	s := "#!/bin/sh\ncase \"$1\" in\n" +
		"deconfig) ip -4 addr flush dev \"$interface\" ;;\n" +
		"bound|renew) ip -4 addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\"; env > " + dir + "/bound ;;\n" +
		"esac\n"
	if err := os.WriteFile(hook, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		args := append([]string{"udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", hook}, extra...)
		out, err := ns.Command(ctx, "busybox", args...).CombinedOutput()
		cancel()
		if err == nil {
			b, err := os.ReadFile(filepath.Join(dir, "bound"))
			if err != nil {
				t.Fatal(err)
			}
			env := map[string]string{}
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					env[k] = v
				}
			}
			return env
		}
		select {
		case <-srv.Done():
			t.Fatalf("metal serve exited: %v\n%s", srv.Err(), srv.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("udhcpc got no lease: %v\n%s\nmetal serve log:\n%s", err, out, srv.Log())
		}
	}
}

func httpCode(t *testing.T, ns *pxetest.Netns, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := ns.Command(ctx, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url).Output()
	return string(out)
}

func curl(t *testing.T, ns *pxetest.Netns, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := ns.Command(ctx, "curl", "-sSf", url).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", url, err, out)
	}
	return string(out)
}
