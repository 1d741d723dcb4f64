package bmc

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"

	"github.com/metal-dev/metal/internal/hwinv"
)

// redfishHardware reads the deep inventory of sys: its Processors,
// Memory, Storage drives and EthernetInterfaces, its chassis's Power
// (PSUs) and Thermal (fans, temperatures), and the service's
// FirmwareInventory. BMCs differ in what they carry; a resource that is
// absent is left empty, and each one that cannot be read is named in the
// returned list (the reading is still useful without it).
func redfishHardware(api *gofish.APIClient, sys *redfish.ComputerSystem) (hwinv.Report, []string) {
	r := hwinv.Report{Source: ProtocolRedfish}
	var gaps []string
	gap := func(what string, err error) {
		if err != nil {
			gaps = append(gaps, fmt.Sprintf("%s: %v", what, err))
		}
	}
	cpus, err := sys.Processors()
	gap("processors", err)
	for _, p := range cpus {
		if p.ProcessorType != "" && p.ProcessorType != redfish.CPUProcessorType {
			continue // GPUs, FPGAs: not the machine's CPUs
		}
		r.CPUs = append(r.CPUs, hwinv.CPU{Socket: orName(p.Socket, p.ID), Model: strings.TrimSpace(p.Model),
			Cores: p.TotalCores, Threads: p.TotalThreads, Health: string(p.Status.Health)})
	}
	dimms, err := sys.Memory()
	gap("memory", err)
	for _, d := range dimms {
		if d.CapacityMiB == 0 {
			continue // an empty slot
		}
		r.DIMMs = append(r.DIMMs, hwinv.DIMM{Name: orName(d.DeviceLocator, d.ID), Bytes: uint64(d.CapacityMiB) << 20,
			Type: string(d.MemoryDeviceType), SpeedMHz: d.OperatingSpeedMhz, Serial: d.SerialNumber, Health: string(d.Status.Health)})
		r.MemoryBytes += uint64(d.CapacityMiB) << 20
	}
	if r.MemoryBytes == 0 && sys.MemorySummary.TotalSystemMemoryGiB > 0 {
		r.MemoryBytes = uint64(float64(sys.MemorySummary.TotalSystemMemoryGiB) * (1 << 30))
	}
	storages, err := sys.Storage()
	gap("storage", err)
	for _, st := range storages {
		drives, err := st.Drives()
		gap("drives of "+st.ID, err)
		for _, d := range drives {
			r.Disks = append(r.Disks, hwinv.Disk{Name: orName(d.Name, d.ID), Model: strings.TrimSpace(d.Model), Serial: strings.TrimSpace(d.SerialNumber),
				Bytes: uint64(max(d.CapacityBytes, 0)), Media: string(d.MediaType), Protocol: string(d.Protocol), Health: string(d.Status.Health)})
		}
	}
	if len(r.Disks) == 0 {
		// Older services (and DMTF's rackmount mockup) list disks only in
		// SimpleStorage, without serials.
		simple, err := sys.SimpleStorages()
		gap("simple storage", err)
		for _, st := range simple {
			for _, d := range st.Devices {
				if d.Status.State == "Absent" {
					continue
				}
				r.Disks = append(r.Disks, hwinv.Disk{Name: d.Name, Model: strings.TrimSpace(d.Model), Bytes: uint64(max(d.CapacityBytes, 0)), Health: string(d.Status.Health)})
			}
		}
	}
	nics, err := sys.EthernetInterfaces()
	gap("ethernet interfaces", err)
	for _, n := range nics {
		mac := n.PermanentMACAddress
		if mac == "" {
			mac = n.MACAddress
		}
		r.NICs = append(r.NICs, hwinv.NIC{Name: orName(n.Name, n.ID), MAC: strings.ToLower(mac), Link: string(n.LinkStatus),
			SpeedMbps: n.SpeedMbps, Health: string(n.Status.Health)})
	}
	if ch, err := systemChassis(api, sys); err != nil {
		gap("chassis", err)
	} else if ch != nil {
		chassisHardware(ch, &r, gap)
	}
	if us, err := api.Service.UpdateService(); err != nil {
		gap("update service", err)
	} else if us != nil {
		fws, err := us.FirmwareInventories()
		gap("firmware inventory", err)
		for _, f := range fws {
			r.Firmware = append(r.Firmware, hwinv.Firmware{ID: f.ID, Name: f.Name, Version: f.Version, Updateable: f.Updateable})
		}
	}
	r.Sort()
	return r, gaps
}

func chassisHardware(ch *redfish.Chassis, r *hwinv.Report, gap func(string, error)) {
	if pw, err := ch.Power(); err != nil {
		gap("power", err)
	} else if pw != nil {
		for _, p := range pw.PowerSupplies {
			r.PSUs = append(r.PSUs, hwinv.PSU{Name: orName(p.Name, p.MemberID), Model: strings.TrimSpace(p.Model), Serial: strings.TrimSpace(p.SerialNumber),
				Watts: int(p.PowerCapacityWatts), Health: string(p.Status.Health)})
		}
	}
	if th, err := ch.Thermal(); err != nil {
		gap("thermal", err)
	} else if th != nil {
		for _, f := range th.Fans {
			r.Fans = append(r.Fans, hwinv.Sensor{Name: orName(f.Name, f.MemberID), Reading: float64(f.Reading), Units: string(f.ReadingUnits), Health: string(f.Status.Health)})
		}
		for _, t := range th.Temperatures {
			r.Temperatures = append(r.Temperatures, hwinv.Sensor{Name: orName(t.Name, t.MemberID), Reading: float64(t.ReadingCelsius), Units: "Cel", Health: string(t.Status.Health)})
		}
	}
}

// systemChassis finds the chassis that holds sys: the one that lists it
// among its ComputerSystems, else the only one. gofish keeps the
// system's own Links.Chassis private.
func systemChassis(api *gofish.APIClient, sys *redfish.ComputerSystem) (*redfish.Chassis, error) {
	all, err := api.Service.Chassis()
	if err != nil {
		return nil, err
	}
	for _, ch := range all {
		systems, err := ch.ComputerSystems()
		if err != nil {
			continue
		}
		if slices.ContainsFunc(systems, func(s *redfish.ComputerSystem) bool { return s.ODataID == sys.ODataID }) {
			return ch, nil
		}
	}
	if len(all) == 1 {
		return all[0], nil
	}
	if len(all) == 0 {
		return nil, nil
	}
	return nil, errors.New("no chassis links to the system")
}

func orName(name, id string) string {
	if strings.TrimSpace(name) != "" {
		return strings.TrimSpace(name)
	}
	return id
}
