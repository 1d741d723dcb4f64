package virtual_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
)

const (
	user = "admin"
	pass = "vbmc-Test-pw"
)

// rf is a tiny Redfish client for assertions on the wire format.
type rf struct {
	t     *testing.T
	base  string
	token string
}

func (c *rf) do(method, path string, body any) (int, map[string]any, http.Header) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, resp.Header
}

func (c *rf) powerState(system string) string {
	c.t.Helper()
	code, body, _ := c.do("GET", "/redfish/v1/Systems/"+system, nil)
	if code != 200 {
		c.t.Fatalf("GET system %s: %d %v", system, code, body)
	}
	return body["PowerState"].(string)
}

func waitPower(t *testing.T, c *rf, system, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.powerState(system) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached %s", system, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRedfishWireWithQEMU speaks Redfish by hand to a virtual BMC with two
// machines on one listener, one a real QEMU: sessions, auth, resets, boot
// override (checked on QEMU's command line) and validation.
func TestRedfishWireWithQEMU(t *testing.T) {
	t.Parallel()
	log := testpeer.NewLog(t)
	vm := testpeer.QEMU(t, "vm-a", log.Logger)
	url, _ := testpeer.VBMC(t, false, user, pass, log.Logger,
		virtual.MachineSpec{Name: "vm-a", Machine: vm},
		virtual.MachineSpec{Name: "vm-b", Machine: vm2(t, log)},
	)
	anon := &rf{t: t, base: url}

	if code, _, _ := anon.do("GET", "/redfish/v1/Systems", nil); code != http.StatusUnauthorized {
		t.Errorf("unauthenticated GET Systems = %d, want 401", code)
	}
	if code, root, _ := anon.do("GET", "/redfish/v1/", nil); code != 200 || root["RedfishVersion"] == nil {
		t.Errorf("service root = %d %v", code, root)
	}
	if code, _, _ := anon.do("POST", "/redfish/v1/SessionService/Sessions", map[string]string{"UserName": user, "Password": "nope"}); code != http.StatusUnauthorized {
		t.Errorf("session with a wrong password = %d, want 401", code)
	}
	code, _, hdr := anon.do("POST", "/redfish/v1/SessionService/Sessions", map[string]string{"UserName": user, "Password": pass})
	if code != http.StatusCreated || hdr.Get("X-Auth-Token") == "" || !strings.HasPrefix(hdr.Get("Location"), "/redfish/v1/SessionService/Sessions/") {
		t.Fatalf("create session = %d, headers %v", code, hdr)
	}
	c := &rf{t: t, base: url, token: hdr.Get("X-Auth-Token")}

	_, systems, _ := c.do("GET", "/redfish/v1/Systems", nil)
	if diff := cmp.Diff(float64(2), systems["Members@odata.count"]); diff != "" {
		t.Errorf("Systems members (-want +got):\n%s", diff)
	}
	if got := c.powerState("vm-a"); got != "Off" {
		t.Errorf("vm-a before power on = %s, want Off", got)
	}

	tests := map[string]struct {
		method, path string
		body         any
		want         int
	}{
		"unknown boot target":    {"PATCH", "/redfish/v1/Systems/vm-a", map[string]any{"Boot": map[string]string{"BootSourceOverrideTarget": "Floppy"}}, 400},
		"unknown reset type":     {"POST", "/redfish/v1/Systems/vm-a/Actions/ComputerSystem.Reset", map[string]string{"ResetType": "Nmi"}, 400},
		"unknown system":         {"GET", "/redfish/v1/Systems/nope", nil, 404},
		"method not allowed":     {"DELETE", "/redfish/v1/Systems/vm-a", nil, 405},
		"boot override pxe once": {"PATCH", "/redfish/v1/Systems/vm-a", map[string]any{"Boot": map[string]string{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "Legacy"}}, 204},
	}
	for name, tc := range tests {
		if code, body, _ := c.do(tc.method, tc.path, tc.body); code != tc.want {
			t.Errorf("%s: %s %s = %d (%v), want %d", name, tc.method, tc.path, code, body, tc.want)
		}
	}

	if code, body, _ := c.do("POST", "/redfish/v1/Systems/vm-a/Actions/ComputerSystem.Reset", map[string]string{"ResetType": "On"}); code != 204 {
		t.Fatalf("reset On = %d %v", code, body)
	}
	waitPower(t, c, "vm-a", "On")
	if cmdline := procCmdline(t, vm.PID()); !strings.Contains(cmdline, "-boot once=n") {
		t.Errorf("QEMU was not started to PXE boot once: %s", cmdline)
	}
	_, sys, _ := c.do("GET", "/redfish/v1/Systems/vm-a", nil)
	if diff := cmp.Diff(map[string]any{"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None"},
		map[string]any{"BootSourceOverrideEnabled": sys["Boot"].(map[string]any)["BootSourceOverrideEnabled"], "BootSourceOverrideTarget": sys["Boot"].(map[string]any)["BootSourceOverrideTarget"]}); diff != "" {
		t.Errorf("a Once override must be spent by the boot that used it (-want +got):\n%s", diff)
	}
	if got := c.powerState("vm-b"); got != "Off" {
		t.Errorf("vm-b changed with vm-a: %s", got)
	}
	if code, _, _ := c.do("POST", "/redfish/v1/Systems/vm-a/Actions/ComputerSystem.Reset", map[string]string{"ResetType": "ForceRestart"}); code != 204 {
		t.Errorf("ForceRestart = %d", code)
	}
	if code, _, _ := c.do("POST", "/redfish/v1/Systems/vm-a/Actions/ComputerSystem.Reset", map[string]string{"ResetType": "ForceOff"}); code != 204 {
		t.Errorf("ForceOff = %d", code)
	}
	waitPower(t, c, "vm-a", "Off")
	if vm.PID() != 0 {
		t.Errorf("QEMU still runs after ForceOff")
	}
	if code, _, _ := c.do("DELETE", hdr.Get("Location"), nil); code != 204 {
		t.Errorf("delete session = %d", code)
	}
	if code, _, _ := c.do("GET", "/redfish/v1/Systems", nil); code != 401 {
		t.Errorf("deleted session still works: %d", code)
	}
}

// TestAttachOnlyQEMU controls a QEMU that the BMC did not start (no
// command line): power off pauses it, power on resumes it.
func TestAttachOnlyQEMU(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "vbmc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := dir + "/q.sock"
	args := append(testpeer.QEMUCommand(t)[1:], "-S", "-qmp", "unix:"+sock+",server=on,wait=off")
	cmd := exec.Command(testpeer.QEMUCommand(t)[0], args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	m, err := virtual.NewQEMU(virtual.QEMUConfig{Name: "attached", QMPSocket: sock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	steps := []struct {
		do   func() error
		want virtual.Power
	}{
		{func() error { return nil }, virtual.PowerOff}, // -S: prelaunch
		{func() error { return m.PowerOn(ctx) }, virtual.PowerOn},
		{func() error { return m.PowerOff(ctx, true) }, virtual.PowerOff},
		{func() error { return m.Reset(ctx) }, virtual.PowerOn},
	}
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got, err := m.PowerState(ctx); err != nil || got != s.want {
			t.Fatalf("step %d: power = %s, %v; want %s", i, got, err, s.want)
		}
	}
	if cmd.ProcessState != nil {
		t.Errorf("an attach-only BMC must never end the QEMU it did not start")
	}
}

func vm2(t *testing.T, log *testpeer.Log) virtual.Machine {
	return testpeer.QEMU(t, "vm-b", log.Logger)
}

func procCmdline(t *testing.T, pid int) string {
	t.Helper()
	if pid == 0 {
		t.Fatal("no QEMU process")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\x00", " ")
}
