package bmc_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/internal/hwinv"
)

// TestDeepInventoryRedfish reads the deep inventory of a virtual BMC
// machine with two sockets, two DIMMs, an NVMe and a failing SATA drive,
// two PSUs, fans, temperatures and firmware, as gofish walks it
// (Systems/.../Processors, Memory, Storage/Drives, EthernetInterfaces,
// Chassis Power and Thermal, UpdateService/FirmwareInventory).
func TestDeepInventoryRedfish(t *testing.T) {
	t.Parallel()
	sim := virtual.NewSim(virtual.SimOptions{Name: "inv-01"})
	hw := &virtual.Hardware{
		CPUs:     []virtual.CPU{{Model: "Xeon 6330", Cores: 28, Threads: 56}, {Model: "Xeon 6330", Cores: 28, Threads: 56}},
		DIMMs:    []virtual.DIMM{{CapacityMiB: 32768, Type: "DDR4", SpeedMHz: 3200, Serial: "D-1"}, {CapacityMiB: 32768, Type: "DDR4", SpeedMHz: 3200, Serial: "D-2"}},
		Drives:   []virtual.Drive{{Model: "PM9A3", Serial: "S-NV-1", Bytes: 960 << 30, Media: "SSD", Protocol: "NVMe", Health: "OK"}, {Model: "ST4000", Serial: "S-HD-2", Bytes: 4 << 40, Media: "HDD", Protocol: "SATA", Health: "Critical"}},
		PSUs:     []virtual.PSU{{Model: "P-800", Serial: "PS-1", Watts: 800, Health: "OK"}},
		Fans:     []virtual.Fan{{Name: "Fan 1", RPM: 7000, Health: "OK"}},
		Temps:    []virtual.Temp{{Name: "Inlet", Celsius: 24, Health: "OK"}},
		NICMbps:  25000,
		Firmware: []virtual.Firmware{{ID: "BIOS", Name: "System BIOS", Version: "2.1.0", Updateable: true}},
	}
	c := biosClient(t, virtual.MachineSpec{Name: "inv-01", Machine: sim, MACs: []string{"52:54:00:12:34:56"}, Hardware: hw})
	inv, err := c.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if inv.Hardware == nil || len(inv.Gaps) > 0 || inv.BIOSVersion != "2.1.0" {
		t.Fatalf("inventory %+v, gaps %v", inv, inv.Gaps)
	}
	want := hwinv.Report{
		Source:       "redfish",
		CPUs:         []hwinv.CPU{{Socket: "CPU 1", Model: "Xeon 6330", Cores: 28, Threads: 56, Health: "OK"}, {Socket: "CPU 2", Model: "Xeon 6330", Cores: 28, Threads: 56, Health: "OK"}},
		MemoryBytes:  64 << 30,
		DIMMs:        []hwinv.DIMM{{Name: "0", Bytes: 32 << 30, Type: "DDR4", SpeedMHz: 3200, Serial: "D-1", Health: "OK"}, {Name: "1", Bytes: 32 << 30, Type: "DDR4", SpeedMHz: 3200, Serial: "D-2", Health: "OK"}},
		Disks:        []hwinv.Disk{{Name: "Drive 0", Model: "PM9A3", Serial: "S-NV-1", Bytes: 960 << 30, Media: "SSD", Protocol: "NVMe", Health: "OK"}, {Name: "Drive 1", Model: "ST4000", Serial: "S-HD-2", Bytes: 4 << 40, Media: "HDD", Protocol: "SATA", Health: "Critical"}},
		NICs:         []hwinv.NIC{{Name: "NIC 0", MAC: "52:54:00:12:34:56", Link: "LinkUp", SpeedMbps: 25000, Health: "OK"}},
		PSUs:         []hwinv.PSU{{Name: "Power Supply 1", Model: "P-800", Serial: "PS-1", Watts: 800, Health: "OK"}},
		Fans:         []hwinv.Sensor{{Name: "Fan 1", Reading: 7000, Units: "RPM", Health: "OK"}},
		Temperatures: []hwinv.Sensor{{Name: "Inlet", Reading: 24, Units: "Cel", Health: "OK"}},
		Firmware:     []hwinv.Firmware{{ID: "inv-01-BIOS", Name: "System BIOS", Version: "2.1.0", Updateable: true}},
	}
	if d := cmp.Diff(want, *inv.Hardware, cmpopts.IgnoreFields(hwinv.Report{}, "ReadAt")); d != "" {
		t.Errorf("deep inventory (-want +got):\n%s", d)
	}
	if got := inv.Hardware.Unhealthy(); len(got) != 1 || got[0] != "disk Drive 1: Critical" {
		t.Errorf("unhealthy parts %q, want the failing drive", got)
	}
}
