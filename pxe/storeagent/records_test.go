package storeagent

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/agentapi"
)

// TestWireMatchesRecords: the protocol's messages carry every field of the
// inventory's records they stand for (the task but its secret), under the
// same JSON names, so an agent of one metal and a server of another read
// each other; and a field added to a record fails here until the protocol
// says whether it carries it.
func TestWireMatchesRecords(t *testing.T) {
	task := inventory.AgentTask{ID: "t1", Kind: inventory.TaskInstall, Image: "os", ImageURL: "/images/os/disk", Checksum: "sha256:00",
		Format: "zst", Disk: "/dev/vda", Wipe: inventory.WipeSecure, Hostname: "web-01", SSHAuthorizedKeys: []string{"ssh-ed25519 AAAA"},
		UserData: "#cloud-config\n", PhoneHome: "http://192.0.2.1/ready/x", Secret: "s3cret", NetworkConfig: `{"version":2}`}
	wantTask := task
	wantTask.Secret = ""
	sameJSON(t, "task", wantTask, taskOf(&task))

	hw := agentapi.Hardware{CPU: agentapi.CPU{Model: "m", Sockets: 1, Cores: 2, Threads: 4}, MemoryBytes: 1 << 30,
		Disks: []agentapi.Disk{{Name: "vda", Model: "QEMU", Serial: "S1", SizeBytes: 1 << 30, Rotational: true}},
		NICs:  []agentapi.NIC{{Name: "eth0", MAC: "52:54:00:00:00:01", SpeedMbps: 1000, Driver: "virtio_net"}},
		DMI:   agentapi.DMI{Vendor: "QEMU", Product: "pc", Serial: "SN", UUID: "u", BIOSVersion: "1.16"}, Extra: map[string]string{"k": "v"}}
	sameJSON(t, "hardware", hw, hardwareRecord(hw))

	erase := agentapi.EraseRecord{Disk: "vda", Serial: "S1", Method: agentapi.WipeZero, Mechanism: "overwrite", Bytes: 1 << 30,
		Duration: time.Second, Verified: true, VerifiedBytes: 1 << 20, Note: "n"}
	sameJSON(t, "erase", erase, eraseRecord(erase))

	for _, pair := range []struct {
		wire, record any
		recordOnly   int // fields the record keeps that the protocol does not carry
	}{
		{agentapi.Task{}, inventory.AgentTask{}, 1},    // Secret
		{agentapi.Hardware{}, inventory.Hardware{}, 1}, // ReportedAt, set by the server
		{agentapi.EraseRecord{}, inventory.EraseRecord{}, 0},
		{agentapi.CPU{}, inventory.CPU{}, 0}, {agentapi.Disk{}, inventory.Disk{}, 0}, {agentapi.NIC{}, inventory.NIC{}, 0}, {agentapi.DMI{}, inventory.DMI{}, 0},
	} {
		w, r := reflect.TypeOf(pair.wire), reflect.TypeOf(pair.record)
		if w.NumField()+pair.recordOnly != r.NumField() {
			t.Errorf("%s has %d fields, %s %d: say in the protocol whether it carries the new one", w, w.NumField(), r, r.NumField())
		}
	}
}

func sameJSON(t *testing.T, what string, want, got any) {
	t.Helper()
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(w), string(g)); d != "" {
		t.Errorf("%s on the wire (-record +message):\n%s", what, d)
	}
}
