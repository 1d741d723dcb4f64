package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
	"github.com/metal-dev/metal/lab"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// drillEvery is the primary's snapshot and heartbeat interval in the drill:
// short, so its heartbeat goes stale (three intervals) soon after the kill.
const drillEvery = "2s"

// TestDisasterRecoveryDrill is issue 9's drill, as an operator runs it with
// the metal binary: a lab of one BIOS VM behind the Redfish BMC is
// provisioned by its primary metal, which ships snapshots and a heartbeat
// to an SFTP directory (a real sshd, inside the lab's namespace); a standby
// metal with its own site file and store pulls a replica (metal standby
// --once); promote refuses while the primary beats; the primary's serve is
// SIGKILLed; promote succeeds once the heartbeat is stale; the standby's
// serve takes over the lab's address; a reprovision through its API (the
// console's action, with a token) rewrites the VM's disk (blanked first, so
// the disk's marker proves the write) and the VM boots it; the standby's
// store and events show it; and the old primary, started again, sees the
// fence and refuses to serve.
func TestDisasterRecoveryDrill(t *testing.T) {
	requireLab(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dir := labDir(t)
	metal := buildMetal(t)

	// The lab, then the SFTP server in its namespace, then the primary's
	// serve shipping to it.
	st := upLabWith(t, ctx, lab.Config{Dir: dir, Machines: 1, Metal: metal, NoServe: true})
	vm := st.VMs[0]
	if vm.Firmware != lab.BIOS || vm.Protocol != lab.Redfish {
		t.Fatalf("vm-1 is %s behind %s, want BIOS behind Redfish", vm.Firmware, vm.Protocol)
	}
	sshd := sshdtest.StartWith(t, sshdtest.Options{Netns: st.Netns, Dial: netns.Dialer(st.Netns)})
	// Kept with the lab's logs when the test fails.
	t.Cleanup(func() { copyFile(filepath.Join(sshd.Dir, "sshd.log"), filepath.Join(dir, "logs", "sshd.log")) })
	to := sshd.URL("snapshots")
	ssh := []string{"--known-hosts", sshd.KnownHosts, "-i", sshd.ClientKey}
	st.ServeArgs = append([]string{"--backup-to", to, "--backup-every", drillEvery}, ssh...)
	if _, err := st.StartServe(ctx, metal, 5*time.Minute); err != nil {
		t.Fatalf("primary metal serve: %v", err)
	}

	// 1. The primary provisions the VM.
	run(t, ctx, metal, "lab", "apply", "--dir", dir)
	if err := waitMarkers(ctx, vm.Serial, 1, 3*time.Minute); err != nil {
		t.Fatalf("vm-1 did not boot its disk after the primary's apply: %v\n%s", err, serialLogs(st))
	}
	// lab apply restarted the primary's serve (with its backup flags).
	st, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	primary, ok := st.Proc("serve")
	if !ok || !primary.Running() {
		t.Fatalf("the primary's metal serve does not run after lab apply; see %s", filepath.Join(dir, "logs", "serve.log"))
	}
	// lab status reads the machines through the running serve's socket.
	if s := st.Status(ctx); s.StoreError != "" || s.VMs[0].State != string(inventory.StateProvisioned) {
		t.Errorf("lab status while the primary serves: vm-1 %q, store error %q; want provisioned", s.VMs[0].State, s.StoreError)
	}

	// 2. The standby: its own site file (the same site, its own store),
	// a replica of the primary's snapshot taken after the apply.
	drSite := filepath.Join(dir, "site-dr.hcl")
	writeStandbySite(t, st.Site, drSite, "file://dr/metal.db")
	drStore := "file://" + filepath.Join(dir, "dr", "metal.db")
	standby := append([]string{"--site", drSite, "--from", to}, ssh...)
	deadline := time.Now().Add(time.Minute)
	for {
		inLabRun(t, ctx, st, metal, append([]string{"standby", "--once"}, standby...)...)
		if m := storeMachine(t, ctx, drStore, vm.Name); m.State == inventory.StateProvisioned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby's replica never showed %s provisioned; the primary's log:\n%s", vm.Name, tailFile(primary.Log))
		}
		time.Sleep(time.Second)
	}
	// One host, one clock: a margin of 2 s for skew is plenty.
	promote := append([]string{"promote", "--owner", "dr", "--margin", "2s"}, standby...)
	if out, err := inLab(ctx, st, metal, promote...); err == nil || !strings.Contains(out, "primary is alive") {
		t.Fatalf("promote while the primary beats: %v, want a refusal naming the live primary:\n%s", err, out)
	}

	// 3. The primary dies; the standby is promoted once its heartbeat is
	// stale, without --force.
	if err := syscall.Kill(primary.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for primary.Running() {
		time.Sleep(50 * time.Millisecond)
	}
	var out string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		if out, err = inLab(ctx, st, metal, promote...); err == nil {
			break
		}
		if !strings.Contains(out, "primary is alive") || time.Now().After(deadline) {
			t.Fatalf("promote after the primary died: %v\n%s", err, out)
		}
	}
	if !strings.Contains(out, "fenced") {
		t.Errorf("promote does not say the old primary is fenced:\n%s", out)
	}
	token := strings.TrimSpace(run(t, ctx, metal, "token", "create", "--site", drSite, "--role", "operate", "drill"))
	drServe := append([]string{"--owner", "dr", "--backup-to", to, "--backup-every", drillEvery}, ssh...)
	if _, err := st.StartServeAs(ctx, "serve-dr", metal, append(drServe, drSite), 5*time.Minute); err != nil {
		t.Fatalf("the promoted standby's metal serve: %v", err)
	}

	// 4. Reprovision vm-1 from the standby, as the console's button does.
	// Its disk is blanked first: the disk marker after this is the image
	// the standby's agent wrote.
	before := time.Now()
	for i := 0; st.Status(ctx).VMs[0].Running; i++ {
		if i > 600 {
			t.Fatal("vm-1 still runs a minute after it booted its disk (its image powers off)")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.Truncate(vm.Disk, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(vm.Disk, 4<<30); err != nil {
		t.Fatal(err)
	}
	postAction(t, ctx, st, token, `{"action":"reprovision","machine":"vm-1","reason":"disaster-recovery drill"}`)
	if err := waitMarkers(ctx, vm.Serial, 2, 5*time.Minute); err != nil {
		t.Fatalf("vm-1 did not boot its disk after the reprovision from the standby: %v\n%s\nstandby serve log:\n%s",
			err, serialLogs(st), tailFile(filepath.Join(dir, "logs", "serve-dr.log")))
	}
	var m inventory.Machine
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		out := run(t, ctx, metal, "machines", "show", "vm-1", "--site", drSite, "--json")
		var shown struct {
			Machine inventory.Machine `json:"machine"`
		}
		if err := json.Unmarshal([]byte(out), &shown); err != nil {
			t.Fatalf("metal machines show: %v\n%s", err, out)
		}
		m = shown.Machine
		if m.State == inventory.StateProvisioned && reprovisionedSince(m, before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vm-1 in the standby's store: %s, history %+v; want provisioning → provisioned after %s",
				m.State, m.History, before.Format(time.RFC3339))
		}
	}
	evs := run(t, ctx, metal, "events", "--site", drSite, "--machine", "vm-1", "--last", "0", "--json")
	for _, want := range []string{`"kind":"action"`, "reprovision", `"kind":"agent"`} {
		if !strings.Contains(evs, want) {
			t.Errorf("the standby's events of vm-1 lack %s:\n%s", want, evs)
		}
	}

	// 5. The old primary comes back: it sees the fence and serves nothing.
	back := append(append([]string{"serve"}, st.ServeArgs...), st.Site)
	brief, stop := context.WithTimeout(ctx, time.Minute)
	out, err = inLab(brief, st, metal, back...)
	stop()
	if err == nil || !strings.Contains(out, "fenced") {
		t.Errorf("the returning primary: %v, want it to refuse as fenced:\n%s", err, out)
	}
}

// reprovisionedSince reports whether m went through provisioning to
// provisioned after t.
func reprovisionedSince(m inventory.Machine, t time.Time) bool {
	installing := false
	for _, tr := range m.History {
		if tr.At.Before(t) {
			continue
		}
		if tr.To == inventory.StateProvisioning {
			installing = true
		}
		if installing && tr.To == inventory.StateProvisioned {
			return true
		}
	}
	return false
}

// writeStandbySite writes the standby's copy of the site file: the same
// site, with state in its own store.
func writeStandbySite(t *testing.T, primary, path, state string) {
	t.Helper()
	b, err := os.ReadFile(primary)
	if err != nil {
		t.Fatal(err)
	}
	const line = `state  = "file://state/metal.db"`
	if !bytes.Contains(b, []byte(line)) {
		t.Fatalf("the lab's site file has no line %s", line)
	}
	b = bytes.Replace(b, []byte(line), []byte(`state  = "`+state+`"`), 1)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// storeMachine reads a machine from a store no metal holds (zero if the
// store does not hold it yet).
func storeMachine(t *testing.T, ctx context.Context, url, name string) inventory.Machine {
	t.Helper()
	s, err := backend.Open(ctx, url, backend.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, err := s.Machine(ctx, name)
	if err != nil && !errors.Is(err, inventory.ErrNotFound) {
		t.Fatal(err)
	}
	return m
}

// postAction posts an operator action to the daemon's API inside the lab:
// on the namespace's loopback, where metal serve's management listener is,
// never across the lab's boot network.
func postAction(t *testing.T, ctx context.Context, st *lab.State, token, body string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: netns.Dialer(st.Netns)}, Timeout: 30 * time.Second}
	req, err := http.NewRequestWithContext(ctx, "POST", st.APIURL()+"/api/v1/actions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST /api/v1/actions: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /api/v1/actions %s: %s\n%s", body, resp.Status, b)
	}
}

// waitMarkers waits until the serial log holds at least n boots of the
// lab's disk image.
func waitMarkers(ctx context.Context, serial string, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		b, _ := os.ReadFile(serial)
		got := bytes.Count(b, []byte(lab.Marker))
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d boots of the disk, want %d", bootkit.ErrNoMarker, got, n)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// run runs metal (outside the lab's namespace) and returns its standard
// output; a failure ends the test with both outputs.
func run(t *testing.T, ctx context.Context, metal string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := groupCommand(ctx, metal, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("metal %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// inLabRun is inLab that ends the test on failure.
func inLabRun(t *testing.T, ctx context.Context, st *lab.State, name string, args ...string) string {
	t.Helper()
	out, err := inLab(ctx, st, name, args...)
	if err != nil {
		t.Fatalf("%s %s (in the lab): %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func copyFile(src, dst string) {
	if b, err := os.ReadFile(src); err == nil {
		_ = os.WriteFile(dst, b, 0o644)
	}
}
