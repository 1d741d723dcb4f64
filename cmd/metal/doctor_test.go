package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/doctor"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// startLabBMC serves metal's virtual Redfish BMC for one simulated machine
// on a loopback port inside the lab namespace, and returns its address.
func startLabBMC(t *testing.T, ns *pxetest.Netns, name, user, password string) string {
	t.Helper()
	srv, err := virtual.NewServer(virtual.Options{Username: user, Password: password},
		virtual.MachineSpec{Name: name, Machine: virtual.NewSim(virtual.SimOptions{Name: name}), Manufacturer: "metal-sim"})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln, nil) }()
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// runDoctor runs the real binary's doctor --json inside the namespace and
// returns its exit code and checks by subject.
func runDoctor(t *testing.T, ns *pxetest.Netns, bin string, env []string, args ...string) (int, map[string]doctor.Check) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := ns.Command(ctx, bin, append([]string{"doctor", "--json", "--bmc-timeout", "5s"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("metal doctor: %v\n%s", err, stderr.String())
	}
	var rep view.DoctorReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("doctor --json: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	if rep.OK != (code == 0) {
		t.Errorf("report ok=%v but exit %d", rep.OK, code)
	}
	checks := map[string]doctor.Check{}
	for _, c := range rep.Checks {
		checks[c.Subject] = c
	}
	return code, checks
}

func statuses(checks map[string]doctor.Check) map[string]doctor.Status {
	out := map[string]doctor.Status{}
	for k, c := range checks {
		out[k] = c.Status
	}
	return out
}

func sha256Of(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// wantDetail fails the test unless check subject's detail (or fix)
// contains each of want.
func wantDetail(t *testing.T, checks map[string]doctor.Check, subject string, want ...string) {
	t.Helper()
	c, ok := checks[subject]
	if !ok {
		t.Errorf("no check %q", subject)
		return
	}
	for _, w := range want {
		if !strings.Contains(c.Detail+"\n"+c.Fix, w) {
			t.Errorf("%s: %q lacks %q (fix: %q)", subject, c.Detail, w, c.Fix)
		}
	}
}

// TestDoctorOnALab runs `metal doctor` inside a namespace lab against a
// site with one good and one missing interface, a TFTP port the test holds,
// a good and a corrupted image file, a virtual BMC that answers, one that
// refuses the password and one that is down: each check says what it
// found, the failures say what to do, and the exit status is 1.
func TestDoctorOnALab(t *testing.T) {
	bin := buildMetal(t)
	lab := pxetest.NewLab(t)
	lab.AddHost("m1", pxetest.MAC(1)) // a port on the bridge: carrier
	dir := t.TempDir()

	good := []byte("a kernel the test made\n")
	orig := []byte("an initrd as it was published\n")
	for name, b := range map[string][]byte{
		"vmlinuz":   good,
		"initrd.gz": []byte("an initrd as it was publishes\n"), // one byte changed
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const password = "doctor-bmc-pw-5521"
	bmcUp := startLabBMC(t, lab.NS(), "vm1", "admin", password)
	bmcOther := startLabBMC(t, lab.NS(), "locked", "admin", "not-the-site's")
	var dead net.Listener
	if err := lab.NS().Do(func() (err error) { dead, err = net.Listen("tcp4", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	deadAddr := "http://" + dead.Addr().String()
	dead.Close()

	// Port 69 taken inside the lab by a socket of this test process.
	var tftp net.PacketConn
	if err := lab.NS().Do(func() (err error) { tftp, err = net.ListenPacket("udp4", "0.0.0.0:69"); return err }); err != nil {
		t.Fatal(err)
	}
	defer tftp.Close()

	sitePath := filepath.Join(dir, "site.hcl")
	writeFile(t, sitePath, fmt.Sprintf(`
site "doc" {
  state  = "file://state/state.db"
  listen = "192.0.2.1:8080"
}
variable "pw" { sensitive = true }
network "lab" {
  interface = %q
  subnet    = "192.0.2.0/24"
}
network "gone" {
  interface = "nosuch0"
  subnet    = "198.51.100.0/24"
}
image "live" {
  kernel           = "vmlinuz"
  kernel_checksum  = %q
  initrd           = ["initrd.gz"]
  initrd_checksums = [%q]
}
image "remote" {
  disk     = "http://192.0.2.1:8080/never-fetched-by-doctor.raw"
  checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
}
machine "vm1" {
  mac = "02:00:00:00:00:01"
  ip  = "192.0.2.11"
  image = image.live
  bmc {
    address  = %q
    username = "admin"
    password = var.pw
  }
}
machine "locked" {
  mac = "02:00:00:00:00:02"
  ip  = "192.0.2.12"
  bmc {
    address  = %q
    username = "admin"
    password = var.pw
  }
}
machine "down" {
  mac = "02:00:00:00:00:03"
  ip  = "192.0.2.13"
  bmc {
    address  = %q
    username = "admin"
    password = var.pw
  }
}
`, pxetest.BridgeName, sha256Of(good), sha256Of(orig), bmcUp, bmcOther, deadAddr))

	env := []string{"METAL_VAR_pw=" + password}
	code, checks := runDoctor(t, lab.NS(), bin, env, sitePath)
	// The site has a disk image, so it needs the agent; the test's binary
	// is static. Whether a Debian kernel is already on this host (ok) or
	// serve will fetch one (warn) depends on the machine.
	agent := checks["install agent"]
	delete(checks, "install agent")
	if agent.Status != doctor.OK && agent.Status != doctor.Warn || !strings.Contains(agent.Detail, "linux-image") && !strings.Contains(agent.Detail, "vmlinuz") {
		t.Errorf("install agent: %+v", agent)
	}
	want := map[string]doctor.Status{
		"network lab (br0)":      doctor.OK,
		"network gone (nosuch0)": doctor.Fail,
		"port 67/udp on br0":     doctor.OK,
		"port 67/udp on nosuch0": doctor.Skip,
		"port 69/udp":            doctor.Fail,
		"port 8080/tcp":          doctor.OK,
		"iPXE binaries":          doctor.OK,
		"image live kernel":      doctor.OK,
		"image live initrd":      doctor.Fail,
		"image remote disk":      doctor.Warn,
		"BMC of vm1":             doctor.OK,
		"BMC of locked":          doctor.Fail,
		"BMC of down":            doctor.Fail,
		"state store":            doctor.OK,
		"state directory":        doctor.OK,
	}
	if diff := cmp.Diff(want, statuses(checks)); diff != "" {
		t.Errorf("doctor checks (-want +got):\n%s\n%+v", diff, checks)
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantDetail(t, checks, "network lab (br0)", "192.0.2.1")
	wantDetail(t, checks, "network gone (nosuch0)", "does not exist", "ip link")
	wantDetail(t, checks, "port 69/udp", "in use", fmt.Sprintf("PID %d", os.Getpid()), "--tftp-addr")
	wantDetail(t, checks, "image live initrd", "does not match its checksum", sha256Of(orig), "fetch it again")
	wantDetail(t, checks, "image remote disk", "not cached yet", "metal images fetch")
	wantDetail(t, checks, "BMC of vm1", "power off")
	wantDetail(t, checks, "BMC of locked", "refused the credentials", "password")
	wantDetail(t, checks, "BMC of down", "nothing is listening")
	for _, c := range checks {
		if (c.Status == doctor.Fail || c.Status == doctor.Warn) && c.Fix == "" {
			t.Errorf("%s fails with no fix: %s", c.Subject, c.Detail)
		}
		if strings.Contains(c.Detail+c.Fix, password) {
			t.Errorf("%s shows the BMC password", c.Subject)
		}
	}

	// The same, for people: one line per check, with what to do under
	// each failure.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := lab.NS().Command(ctx, bin, "doctor", "--bmc-timeout", "5s", sitePath)
	cmd.Env = append(os.Environ(), env...)
	out, _ := cmd.CombinedOutput()
	for _, line := range []string{
		"✓ network lab (br0): br0 is up with 192.0.2.1 in 192.0.2.0/24",
		"✗ image live initrd: ",
		"    → the file is damaged",
		"- port 67/udp on nosuch0: not checked",
		"5 of 16 checks failed",
	} {
		if !strings.Contains(string(out), line) {
			t.Errorf("human output lacks %q:\n%s", line, out)
		}
	}
}

// TestDoctorBesideServe: while `metal serve` runs a site, doctor of that
// same site finds its ports and state store held by it and says that is
// fine; doctor of another site wanting the same ports fails and names the
// serve holding them.
func TestDoctorBesideServe(t *testing.T) {
	bin := buildMetal(t)
	lab := pxetest.NewLab(t)
	lab.AddHost("m1", pxetest.MAC(1))
	dir := t.TempDir()
	siteHCL := `
site "%s" {
  state            = "file://%s/state.db"
  listen           = "192.0.2.1:8080"
  unknown_machines = "ignore"
}
network "lab" {
  interface = %q
  subnet    = "192.0.2.0/24"
  pool      = "192.0.2.100-192.0.2.150"
}
`
	served := filepath.Join(dir, "served.hcl")
	writeFile(t, served, fmt.Sprintf(siteHCL, "served", "state-a", pxetest.BridgeName))
	other := filepath.Join(dir, "other.hcl")
	writeFile(t, other, fmt.Sprintf(siteHCL, "other", "state-b", pxetest.BridgeName))

	// serve is started by relative path from the site's directory, as an
	// operator would; doctor gets an absolute one. Both name one file.
	proc := lab.NS().Start("sh", "-c", fmt.Sprintf("cd %s && exec %s serve served.hcl", dir, bin))
	waitListening(t, lab.NS(), "192.0.2.1:8080", proc)

	code, checks := runDoctor(t, lab.NS(), bin, nil, served)
	if code != 0 {
		t.Errorf("doctor of the served site: exit %d: %+v", code, checks)
	}
	for _, subject := range []string{"port 67/udp on br0", "port 69/udp", "port 8080/tcp", "state store"} {
		if checks[subject].Status != doctor.OK {
			t.Errorf("%s: %+v", subject, checks[subject])
		}
		wantDetail(t, checks, subject, "running metal serve of this site")
	}

	code, checks = runDoctor(t, lab.NS(), bin, nil, other)
	if code != 1 {
		t.Errorf("doctor of another site on the same ports: exit %d", code)
	}
	for _, subject := range []string{"port 67/udp on br0", "port 69/udp", "port 8080/tcp"} {
		if checks[subject].Status != doctor.Fail {
			t.Errorf("%s: %+v", subject, checks[subject])
		}
		wantDetail(t, checks, subject, "metal serve (PID", "another site's metal serve")
	}
	if checks["state store"].Status != doctor.OK {
		t.Errorf("the other site's own store: %+v", checks["state store"])
	}
}

// waitListening waits until addr accepts TCP connections inside ns, or the
// process has exited.
func waitListening(t *testing.T, ns *pxetest.Netns, addr string, proc *pxetest.Process) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-proc.Done():
			t.Fatalf("process exited: %v\n%s", proc.Err(), proc.Log())
		default:
		}
		// The socket is made on the namespace's thread, so it dials there.
		if err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp4", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s\n%s", addr, proc.Log())
}

// TestDoctorStateDirectoryFullOrReadOnly runs doctor in its own mount
// namespace with the state directory on a small tmpfs, once filled to the
// last byte and once remounted read-only: the state checks fail and say
// why and what to do.
func TestDoctorStateDirectoryFullOrReadOnly(t *testing.T) {
	unshare := pxetest.RequireTool(t, "unshare", "util-linux")
	bin := buildMetal(t)
	lab := pxetest.NewLab(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	sitePath := filepath.Join(dir, "site.hcl")
	writeFile(t, sitePath, fmt.Sprintf(`
site "small" {
  state  = "file://%s/state.db"
  listen = "192.0.2.1:8080"
}
network "lab" {
  interface = %q
  subnet    = "192.0.2.0/24"
}
`, state, pxetest.BridgeName))

	tests := map[string]struct {
		prepare string
		want    string
		fix     string
	}{
		"full":      {prepare: "cat /dev/zero > $D/fill 2>/dev/null || true", want: "full file system", fix: "free space"},
		"read-only": {prepare: "mount -o remount,ro $D", want: "read-only file system", fix: "read-write"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			script := fmt.Sprintf(`set -e; D=%s; mount -t tmpfs -o size=256k metal-doctor-test $D; %s; exec %s doctor --json --bmc-timeout 5s %s`,
				state, tc.prepare, bin, sitePath)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// A private mount namespace: the tmpfs vanishes with the process.
			cmd := lab.NS().Command(ctx, unshare, "--mount", "--propagation", "private", "sh", "-c", script)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("doctor: %v (want exit 1)\n%s\n%s", err, stdout.String(), stderr.String())
			}
			var rep view.DoctorReport
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
				t.Fatalf("%v: %s\n%s", err, stdout.String(), stderr.String())
			}
			checks := map[string]doctor.Check{}
			for _, c := range rep.Checks {
				checks[c.Subject] = c
			}
			for _, subject := range []string{"state store", "state directory"} {
				if checks[subject].Status != doctor.Fail {
					t.Errorf("%s: %+v", subject, checks[subject])
				}
				wantDetail(t, checks, subject, tc.want, tc.fix)
			}
		})
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Errorf("the tmpfs leaked into the test's mount namespace: %v", entries)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
