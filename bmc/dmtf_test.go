package bmc_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
)

// dmtfMockup serves one of DMTF's public Redfish mockups with DMTF's own
// Redfish-Mockup-Server (python3), and returns its URL. The server and
// its mockups are not part of metal's tree (they are DMTF's, and
// fetched): METAL_DMTF_MOCKUPS names a checkout of
// github.com/DMTF/Redfish-Mockup-Server (it carries the public-rackmount1
// mockup), METAL_DMTF_MOCKUP the mockup folder in it (default
// public-rackmount1, served in its short form: no /redfish/v1 folder).
// Without them the test is skipped. The server
// imports grequests only to post events; where it is not installed a stub
// stands in.
func dmtfMockup(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("METAL_DMTF_MOCKUPS")
	if dir == "" {
		t.Skip("METAL_DMTF_MOCKUPS is not set: point it at a checkout of github.com/DMTF/Redfish-Mockup-Server to test against DMTF's mockups")
	}
	mockup := os.Getenv("METAL_DMTF_MOCKUP")
	if mockup == "" {
		mockup = "public-rackmount1"
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is needed for DMTF's Redfish-Mockup-Server")
	}
	stubs := t.TempDir()
	if exec.Command(python, "-c", "import grequests").Run() != nil {
		if err := os.WriteFile(filepath.Join(stubs, "grequests.py"), []byte("def post(*a, **k): return None\ndef map(*a, **k): return []\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(python, filepath.Join(dir, "redfishMockupServer.py"), "-H", "127.0.0.1", "-p", fmt.Sprint(port), "-S", "-D", filepath.Join(dir, mockup))
	cmd.Env = append(os.Environ(), "PYTHONPATH="+stubs)
	log := filepath.Join(t.TempDir(), "mockup.log")
	out, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("Redfish-Mockup-Server:\n%s", b)
		}
	})
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(url + "/redfish/v1")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redfish-Mockup-Server did not answer on %s: %v", url, err)
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("Redfish-Mockup-Server exited: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestDMTFMockup reads the deep inventory and the BIOS settings of DMTF's
// public rackmount mockup, and stages a BIOS change in its Settings
// object, as plan and apply do.
func TestDMTFMockup(t *testing.T) {
	url := dmtfMockup(t)
	log := testpeer.NewLog(t)
	c, err := bmc.New(bmc.Config{Machine: "dmtf", Protocol: "redfish", Address: url, Username: "admin", Password: "password",
		Timeout: 10 * time.Second, Retries: 1}, log.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	inv, err := c.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hw := inv.Hardware
	if hw == nil || len(hw.CPUs) == 0 || hw.MemoryBytes == 0 || len(hw.Disks) == 0 || len(hw.NICs) == 0 || len(hw.Firmware) == 0 {
		t.Fatalf("deep inventory of the DMTF mockup %+v (gaps %v): want CPUs, memory, disks, NICs and firmware", hw, inv.Gaps)
	}
	t.Logf("inventory: %s %s serial %s; %d CPUs, %d DIMMs, %d disks, %d NICs, %d PSUs, %d fans, %d temperatures, %d firmware; gaps %v",
		inv.Manufacturer, inv.Model, inv.Serial, len(hw.CPUs), len(hw.DIMMs), len(hw.Disks), len(hw.NICs), len(hw.PSUs), len(hw.Fans), len(hw.Temperatures), len(hw.Firmware), inv.Gaps)

	b, err := c.BIOS(ctx)
	if err != nil {
		t.Fatalf("BIOS of the DMTF mockup: %v", err)
	}
	if len(b.Attributes) == 0 {
		t.Fatalf("BIOS of the DMTF mockup has no attributes: %+v", b)
	}
	t.Logf("BIOS: %d attributes, %d pending, registry of %d", len(b.Attributes), len(b.Pending), len(b.Registry))

	// The mockup publishes no attribute registry: values are staged
	// unchecked (typed as the values in effect), names are checked
	// against the attributes it reports.
	if b.Registry != nil {
		t.Fatalf("the DMTF mockup has an attribute registry now: %d attributes; test its checks", len(b.Registry))
	}
	if err := c.SetBIOS(ctx, map[string]string{"PowerProfile": "PowerSaving", "ProcCoreDisable": "2"}); err != nil {
		t.Fatalf("stage BIOS settings on the DMTF mockup: %v", err)
	}
	after, err := c.BIOS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Pending["PowerProfile"] != "PowerSaving" || after.Pending["ProcCoreDisable"] != "2" {
		t.Errorf("pending after staging: %v", after.Pending)
	}
	if err := c.SetBIOS(ctx, map[string]string{"NoSuchAttribute": "x"}); err == nil || !strings.Contains(err.Error(), "reports no BIOS attribute NoSuchAttribute") {
		t.Errorf("an attribute the mockup does not report: %v", err)
	}
}
