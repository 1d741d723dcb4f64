package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/pxe/dhcp"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestServeStateDirectoryFullOrReadOnly runs `metal serve` in its own
// mount namespace with its state directory on a small tmpfs, then fills
// that file system, and later remounts it read-only: a machine asking for
// a new lease then gets none (metal acknowledges only leases it has
// written), the log says why, the lease file keeps its last whole content
// with no temporary file left beside it, TFTP and HTTP go on serving, and
// once there is room (or the file system is writable) again the machine
// gets its lease without a restart.
func TestServeStateDirectoryFullOrReadOnly(t *testing.T) {
	unshare := pxetest.RequireTool(t, "unshare", "util-linux")
	nsenter := pxetest.RequireTool(t, "nsenter", "util-linux")
	pxetest.RequireTool(t, "busybox", "busybox-static")
	pxetest.RequireTool(t, "curl", "curl")
	bin := buildMetal(t)
	lab := pxetest.NewLab(t)
	hosts := []*pxetest.Netns{lab.AddHost("m1", pxetest.MAC(1)), lab.AddHost("m2", pxetest.MAC(2)), lab.AddHost("m3", pxetest.MAC(3))}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o750); err != nil {
		t.Fatal(err)
	}
	sitePath := filepath.Join(dir, "site.hcl")
	writeFile(t, sitePath, fmt.Sprintf(`
site "faults" {
  state  = "file://state/state.db"
  listen = "192.0.2.1:8080"
  # no discovery: these tests need no install agent
  unknown_machines = "ignore"
}
network "lab" {
  interface = %q
  subnet    = "192.0.2.0/24"
  pool      = "192.0.2.100-192.0.2.150"
}
machine "m1" {
  mac = %q
  ip  = "192.0.2.11"
}
machine "m2" {
  mac = %q
  ip  = "192.0.2.12"
}
machine "m3" {
  mac = %q
  ip  = "192.0.2.13"
}
`, pxetest.BridgeName, pxetest.MAC(1), pxetest.MAC(2), pxetest.MAC(3)))

	// serve's PID is the shell's: it execs metal. The tmpfs exists only in
	// serve's mount namespace; the test reaches it through /proc/PID/root.
	pidFile := filepath.Join(dir, "serve.pid")
	srv := lab.NS().Start(unshare, "--mount", "--propagation", "private", "sh", "-c",
		fmt.Sprintf("set -e; mount -t tmpfs -o size=2m metal-faults %s; echo $$ > %s; cd %s; exec %s serve --tftp-addr 192.0.2.1:69 site.hcl",
			state, pidFile, dir, bin))
	leaseWithRetry(t, hosts[0], srv)
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	inServe := func(p string) string { return filepath.Join("/proc", strconv.Itoa(pid), "root", p) }
	leaseFile := inServe(filepath.Join(state, "leases-lab.json"))
	mountCmd := func(args ...string) {
		t.Helper()
		out, err := exec.Command(nsenter, append([]string{"-t", strconv.Itoa(pid), "-m", "mount"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("mount %v in serve's namespace: %v: %s", args, err, out)
		}
	}

	// assertIntact: the lease file parses and holds exactly the MACs that
	// have been acknowledged, and no temporary file is left beside it.
	assertIntact := func(when string, macs ...string) {
		t.Helper()
		// The lease file is a snapshot and a journal beside it: read both
		// as metal does after a restart.
		leases, err := dhcp.NewFileStore(leaseFile).Load(context.Background())
		if err != nil {
			t.Fatalf("%s: the lease file is damaged: %v", when, err)
		}
		var got []string
		for _, l := range leases {
			got = append(got, l.MAC.String())
		}
		if strings.Join(got, ",") != strings.Join(macs, ",") {
			t.Errorf("%s: lease file holds %v, want %v", when, got, macs)
		}
		ents, _ := os.ReadDir(inServe(state))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".leases") {
				t.Errorf("%s: half-written file left: %s", when, e.Name())
			}
		}
	}
	// stillServes: TFTP and HTTP answer whatever the disk does.
	stillServes := func(when string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if out, err := hosts[0].Command(ctx, "curl", "-sS", "-o", "/dev/null", "tftp://192.0.2.1/undionly.kpxe").CombinedOutput(); err != nil {
			t.Errorf("%s: TFTP: %v: %s", when, err, out)
		}
		if out, err := hosts[0].Command(ctx, "curl", "-sSf", "-o", "/dev/null", "http://192.0.2.1:8080/boot/undionly.kpxe").CombinedOutput(); err != nil {
			t.Errorf("%s: HTTP: %v: %s", when, err, out)
		}
		select {
		case <-srv.Done():
			t.Fatalf("%s: metal serve exited: %v\n%s", when, srv.Err(), srv.Log())
		default:
		}
	}
	m := func(i int) string { return pxetest.MAC(i).String() }
	assertIntact("after the first lease", m(1))

	// Full: fill the tmpfs to its last byte.
	fill := inServe(filepath.Join(state, "fill"))
	if out, err := exec.Command("sh", "-c", "cat /dev/zero > "+fill+" 2>/dev/null || true").CombinedOutput(); err != nil {
		t.Fatalf("fill: %v: %s", err, out)
	}
	if _, ok := tryLease(t, hosts[1]); ok {
		t.Errorf("m2 got a lease metal could not write down")
	}
	if !strings.Contains(srv.Log(), "no space left on device") {
		t.Errorf("serve's log does not say the disk is full:\n%s", srv.Log())
	}
	assertIntact("with the disk full", m(1))
	stillServes("with the disk full")
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	leaseWithRetry(t, hosts[1], srv)
	assertIntact("after freeing space", m(1), m(2))

	// Read-only: the same, and back. The store keeps its file open for
	// writing, so the tmpfs itself cannot be remounted read-only; a
	// read-only bind mount over it makes every new write through the path
	// fail with EROFS, as a file system remounted read-only after an error
	// does.
	mountCmd("--bind", state, state)
	mountCmd("-o", "remount,ro,bind", state)
	if _, ok := tryLease(t, hosts[2]); ok {
		t.Errorf("m3 got a lease metal could not write down")
	}
	if !strings.Contains(srv.Log(), "read-only file system") {
		t.Errorf("serve's log does not say the file system is read-only:\n%s", srv.Log())
	}
	assertIntact("read-only", m(1), m(2))
	stillServes("read-only")
	mountCmd("-o", "remount,rw,bind", state)
	leaseWithRetry(t, hosts[2], srv)
	assertIntact("writable again", m(1), m(2), m(3))
}

// tryLease runs udhcpc once, briefly, and reports whether it got a lease.
func tryLease(t *testing.T, ns *pxetest.Netns) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := ns.Command(ctx, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "3", "-T", "1", "-s", "/bin/true").CombinedOutput()
	return string(out), err == nil
}
