package virtual_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
)

// TestRedfishtool drives the virtual BMC (HTTPS, real QEMU) with DMTF's
// redfishtool, as an operator would.
func TestRedfishtool(t *testing.T) {
	t.Parallel()
	tool := testpeer.Need(t, "redfishtool", "redfishtool")
	log := testpeer.NewLog(t)
	vm := testpeer.QEMU(t, "rt-01", log.Logger)
	url, _ := testpeer.VBMC(t, true, user, pass, log.Logger, virtual.MachineSpec{Name: "rt-01", Machine: vm, MACs: []string{"52:54:00:aa:00:01"}})
	host := strings.TrimPrefix(url, "https://")

	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		full := append([]string{"-r", host, "-u", user, "-p", pass, "-S", "Always", "-A", "Session"}, args...)
		out, err := exec.CommandContext(ctx, tool, full...).CombinedOutput()
		if err != nil {
			t.Fatalf("redfishtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	prop := func(system, name string) string {
		t.Helper()
		var v map[string]any
		out := run("Systems", "-I", system, "-P", name, "get")
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("redfishtool output is not JSON: %v\n%s", err, out)
		}
		s, _ := v[name].(string)
		return s
	}

	if !strings.Contains(run("Systems", "list"), "rt-01") {
		t.Error("redfishtool Systems list does not show rt-01")
	}
	run("Systems", "-I", "rt-01", "setBootOverride", "Once", "Pxe")
	run("Systems", "-I", "rt-01", "reset", "On")
	deadline := time.Now().Add(10 * time.Second)
	for prop("rt-01", "PowerState") != "On" {
		if time.Now().After(deadline) {
			t.Fatal("redfishtool reset On never powered the machine on")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if cmdline := procCmdline(t, vm.PID()); !strings.Contains(cmdline, "-boot once=n") {
		t.Errorf("redfishtool's boot override did not reach QEMU: %s", cmdline)
	}
	run("Systems", "-I", "rt-01", "reset", "ForceOff")
	if got := prop("rt-01", "PowerState"); got != "Off" {
		t.Errorf("after ForceOff PowerState = %s", got)
	}
}

// sushyScript uses OpenStack's sushy, the Redfish library of Ironic: it
// trusts the BMC's generated certificate, logs in with a session, powers the system on, sets a persistent UEFI
// PXE boot and prints what it then reads back.
const sushyScript = `
import json, sys, sushy, urllib3
urllib3.disable_warnings()
url, user, pw, system, ca = sys.argv[1:6]
root = sushy.Sushy(url + "/redfish/v1", username=user, password=pw, verify=ca)
s = root.get_system("/redfish/v1/Systems/" + system)
before = s.power_state
s.reset_system(sushy.RESET_ON)
s.set_system_boot_options(sushy.BOOT_SOURCE_TARGET_PXE, enabled=sushy.BOOT_SOURCE_ENABLED_CONTINUOUS, mode=sushy.BOOT_SOURCE_MODE_UEFI)
s.refresh()
members = [m.identity for m in root.get_system_collection().get_members()]
print(json.dumps({"before": str(before), "after": str(s.power_state),
                  "target": str(s.boot.target), "enabled": str(s.boot.enabled),
                  "mode": str(s.boot.mode), "systems": members}))
`

// TestSushy drives the virtual BMC with sushy.
func TestSushy(t *testing.T) {
	t.Parallel()
	py := testpeer.Need(t, "/usr/bin/python3", "python3")
	if err := exec.Command(py, "-c", "import sushy").Run(); err != nil {
		t.Fatalf("sushy is needed for this test: apt-get install -y python3-sushy")
	}
	log := testpeer.NewLog(t)
	vm := testpeer.QEMU(t, "sushy-01", log.Logger)
	url, caFile := testpeer.VBMC(t, true, user, pass, log.Logger,
		virtual.MachineSpec{Name: "sushy-01", Machine: vm},
		virtual.MachineSpec{Name: "other", Machine: &idle{}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", sushyScript, url, user, pass, "sushy-01", caFile)
	// requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE override the CA
	// file a session was given, so they must not reach sushy.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REQUESTS_CA_BUNDLE=") && !strings.HasPrefix(kv, "CURL_CA_BUNDLE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sushy: %v\n%s", err, out)
	}
	var got map[string]any
	if err := json.Unmarshal(out[strings.LastIndex(string(out[:len(out)-1]), "\n")+1:], &got); err != nil {
		t.Fatalf("sushy output: %v\n%s", err, out)
	}
	want := map[string]any{
		"before": "off", "after": "on", "target": "pxe", "enabled": "continuous", "mode": "uefi",
		"systems": []any{"sushy-01", "other"},
	}
	// sushy's enums print as e.g. "PowerState.OFF" in newer releases and as
	// "off" in older ones; compare the value part, lower case.
	for k, v := range got {
		if s, ok := v.(string); ok {
			got[k] = strings.ToLower(s[strings.LastIndex(s, ".")+1:])
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sushy's view (-want +got):\n%s", diff)
	}
}

// idle is a Machine that is always off and accepts everything.
type idle struct{}

func (*idle) PowerState(context.Context) (virtual.Power, error) { return virtual.PowerOff, nil }
func (*idle) PowerOn(context.Context) error                     { return nil }
func (*idle) PowerOff(context.Context, bool) error              { return nil }
func (*idle) Reset(context.Context) error                       { return nil }
func (*idle) SetBootDevice(context.Context, virtual.Boot) error { return nil }
func (*idle) InsertMedia(context.Context, string) error         { return nil }
func (*idle) EjectMedia(context.Context) error                  { return nil }
