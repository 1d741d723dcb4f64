package storeagent

import (
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/agentapi"
)

// The server's edge: the protocol's messages as the inventory's records,
// and back.

// taskOf is the task the agent is given for t, without its secret: the
// agent has that already (its kernel command line), and the answer need
// not carry it.
func taskOf(t *inventory.AgentTask) *agentapi.Task {
	return &agentapi.Task{
		ID: t.ID, Kind: agentapi.TaskKind(t.Kind), Image: t.Image, ImageURL: t.ImageURL, Checksum: t.Checksum,
		Format: t.Format, Disk: t.Disk, Wipe: agentapi.WipeMethod(t.Wipe), Hostname: t.Hostname,
		SSHAuthorizedKeys: t.SSHAuthorizedKeys, UserData: t.UserData, PhoneHome: t.PhoneHome, PhoneHomeAlso: t.PhoneHomeAlso, NetworkConfig: t.NetworkConfig,
	}
}

// hardwareRecord is the inventory's record of a facts report.
func hardwareRecord(hw agentapi.Hardware) inventory.Hardware {
	rec := inventory.Hardware{CPU: inventory.CPU(hw.CPU), MemoryBytes: hw.MemoryBytes, DMI: inventory.DMI(hw.DMI), Extra: hw.Extra}
	for _, d := range hw.Disks {
		rec.Disks = append(rec.Disks, inventory.Disk(d))
	}
	for _, n := range hw.NICs {
		rec.NICs = append(rec.NICs, inventory.NIC(n))
	}
	return rec
}

// eraseRecord is the inventory's record of one disk's erase.
func eraseRecord(e agentapi.EraseRecord) *inventory.EraseRecord {
	return &inventory.EraseRecord{
		Disk: e.Disk, Serial: e.Serial, Method: inventory.WipeMethod(e.Method), Mechanism: e.Mechanism,
		Bytes: e.Bytes, Duration: e.Duration, Verified: e.Verified, VerifiedBytes: e.VerifiedBytes, Note: e.Note,
	}
}
