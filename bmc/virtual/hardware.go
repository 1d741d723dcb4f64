package virtual

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
)

// Hardware is what the virtual BMC reports of a machine's parts, in the
// resources a real BMC has them (DMTF Redfish schema): Processors, Memory
// and Storage under the ComputerSystem, Power and Thermal under the
// Chassis, FirmwareInventory under the UpdateService.
type Hardware struct {
	CPUs     []CPU
	DIMMs    []DIMM
	Drives   []Drive
	PSUs     []PSU
	Fans     []Fan
	Temps    []Temp
	NICMbps  int // link speed of every NIC (all up)
	Firmware []Firmware
}

type CPU struct {
	Model          string
	Cores, Threads int
}

type DIMM struct {
	CapacityMiB int
	Type        string // MemoryDeviceType: DDR4, DDR5
	SpeedMHz    int
	Serial      string
}

type Drive struct {
	Model, Serial string
	Bytes         int64
	Media         string // MediaType: SSD, HDD
	Protocol      string // SATA, NVMe, SAS
	Health        string // OK, Warning, Critical
}

type PSU struct {
	Model, Serial string
	Watts         int
	Health        string
}

type Fan struct {
	Name   string
	RPM    int
	Health string
}

type Temp struct {
	Name    string
	Celsius float64
	Health  string
}

// Firmware is one entry of the FirmwareInventory.
type Firmware struct {
	ID, Name, Version string
	Updateable        bool
}

// DefaultHardware is a small server, enough for the lab to exercise every
// inventory read: what a QEMU VM would be if it had a BMC of its own.
func DefaultHardware(spec MachineSpec) Hardware {
	bios := orDefault(spec.BIOSVersion, "1.16.2")
	return Hardware{
		CPUs:    []CPU{{Model: "QEMU Virtual CPU version 2.5+", Cores: 2, Threads: 2}},
		DIMMs:   []DIMM{{CapacityMiB: 1024, Type: "DDR4", SpeedMHz: 3200, Serial: spec.Name + "-dimm-0"}},
		Drives:  []Drive{{Model: "QEMU HARDDISK", Serial: "metal-disk-0", Bytes: 64 << 30, Media: "SSD", Protocol: "SATA", Health: "OK"}},
		PSUs:    []PSU{{Model: "PSU-550", Serial: spec.Name + "-psu-0", Watts: 550, Health: "OK"}, {Model: "PSU-550", Serial: spec.Name + "-psu-1", Watts: 550, Health: "OK"}},
		Fans:    []Fan{{Name: "Fan 1", RPM: 6000, Health: "OK"}, {Name: "Fan 2", RPM: 6100, Health: "OK"}},
		Temps:   []Temp{{Name: "CPU 1 Temp", Celsius: 41, Health: "OK"}, {Name: "Inlet Temp", Celsius: 23, Health: "OK"}},
		NICMbps: 1000,
		Firmware: []Firmware{
			{ID: "BIOS", Name: "System BIOS", Version: bios, Updateable: true},
			{ID: "BMC", Name: "metal virtual BMC", Version: "metal-vbmc", Updateable: false},
		},
	}
}

func (s *Server) hardwareRoutes(auth func(string, http.HandlerFunc)) {
	auth("GET /redfish/v1/Systems/{id}/Processors", s.withSystem(s.listOf("Processors", "#ProcessorCollection.ProcessorCollection", "Processors Collection", func(h *Hardware) int { return len(h.CPUs) })))
	auth("GET /redfish/v1/Systems/{id}/Processors/{n}", s.withSystem(s.member(func(h *Hardware) int { return len(h.CPUs) }, s.processor)))
	auth("GET /redfish/v1/Systems/{id}/Memory", s.withSystem(s.listOf("Memory", "#MemoryCollection.MemoryCollection", "Memory Module Collection", func(h *Hardware) int { return len(h.DIMMs) })))
	auth("GET /redfish/v1/Systems/{id}/Memory/{n}", s.withSystem(s.member(func(h *Hardware) int { return len(h.DIMMs) }, s.dimm)))
	auth("GET /redfish/v1/Systems/{id}/Storage", s.withSystem(s.storageCollection))
	auth("GET /redfish/v1/Systems/{id}/Storage/1", s.withSystem(s.storage))
	auth("GET /redfish/v1/Systems/{id}/Storage/1/Drives/{n}", s.withSystem(s.member(func(h *Hardware) int { return len(h.Drives) }, s.drive)))
	auth("GET /redfish/v1/Chassis/{id}/Power", s.withSystem(s.power))
	auth("GET /redfish/v1/Chassis/{id}/Thermal", s.withSystem(s.thermal))
	auth("GET /redfish/v1/UpdateService/FirmwareInventory", s.firmwareCollection)
	auth("GET /redfish/v1/UpdateService/FirmwareInventory/{fw}", s.firmware)
}

func status(health string) map[string]string {
	return map[string]string{"State": "Enabled", "Health": orDefault(health, "OK")}
}

// listOf is a collection of n members under the system: .../{what}/{0..n-1}.
func (s *Server) listOf(what, typ, name string, n func(*Hardware) int) func(http.ResponseWriter, *http.Request, *system) {
	return func(w http.ResponseWriter, _ *http.Request, sys *system) {
		base := "/redfish/v1/Systems/" + sys.spec.Name + "/" + what
		members := []map[string]string{}
		for i := range n(&sys.hw) {
			members = append(members, link(base+"/"+strconv.Itoa(i)))
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.type": typ, "@odata.id": base, "Name": name,
			"Members": members, "Members@odata.count": len(members),
		})
	}
}

// member resolves {n} to an index below n and hands it to h.
func (s *Server) member(n func(*Hardware) int, h func(http.ResponseWriter, *http.Request, *system, int)) func(http.ResponseWriter, *http.Request, *system) {
	return func(w http.ResponseWriter, r *http.Request, sys *system) {
		i, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || i < 0 || i >= n(&sys.hw) {
			redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no such member "+r.PathValue("n"))
			return
		}
		h(w, r, sys, i)
	}
}

func (s *Server) processor(w http.ResponseWriter, r *http.Request, sys *system, i int) {
	c := sys.hw.CPUs[i]
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#Processor.v1_11_0.Processor", "@odata.id": r.URL.Path,
		"Id": strconv.Itoa(i), "Name": fmt.Sprintf("Processor %d", i+1), "Socket": fmt.Sprintf("CPU %d", i+1),
		"ProcessorType": "CPU", "ProcessorArchitecture": "x86", "InstructionSet": "x86-64",
		"Manufacturer": "QEMU", "Model": c.Model, "TotalCores": c.Cores, "TotalThreads": c.Threads,
		"Status": status("OK"),
	})
}

func (s *Server) dimm(w http.ResponseWriter, r *http.Request, sys *system, i int) {
	d := sys.hw.DIMMs[i]
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#Memory.v1_11_0.Memory", "@odata.id": r.URL.Path,
		"Id": strconv.Itoa(i), "Name": fmt.Sprintf("DIMM %d", i), "MemoryType": "DRAM",
		"MemoryDeviceType": d.Type, "CapacityMiB": d.CapacityMiB, "OperatingSpeedMhz": d.SpeedMHz,
		"SerialNumber": d.Serial, "Status": status("OK"),
	})
}

func (s *Server) storageCollection(w http.ResponseWriter, _ *http.Request, sys *system) {
	base := "/redfish/v1/Systems/" + sys.spec.Name + "/Storage"
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#StorageCollection.StorageCollection", "@odata.id": base, "Name": "Storage Collection",
		"Members": []map[string]string{link(base + "/1")}, "Members@odata.count": 1,
	})
}

func (s *Server) storage(w http.ResponseWriter, r *http.Request, sys *system) {
	drives := []map[string]string{}
	for i := range sys.hw.Drives {
		drives = append(drives, link(r.URL.Path+"/Drives/"+strconv.Itoa(i)))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#Storage.v1_10_0.Storage", "@odata.id": r.URL.Path,
		"Id": "1", "Name": "Local Storage Controller", "Status": status("OK"),
		"Drives": drives, "Drives@odata.count": len(drives),
		"Volumes": link(r.URL.Path + "/Volumes"),
		"StorageControllers": []map[string]any{{
			"@odata.id": r.URL.Path + "#/StorageControllers/0", "MemberId": "0", "Name": "RAID controller",
			"SupportedRAIDTypes": raidTypes, "Status": status("OK"),
		}},
	})
}

func (s *Server) drive(w http.ResponseWriter, r *http.Request, sys *system, i int) {
	d := sys.hw.Drives[i]
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#Drive.v1_9_0.Drive", "@odata.id": r.URL.Path,
		"Id": strconv.Itoa(i), "Name": fmt.Sprintf("Drive %d", i), "Model": d.Model, "SerialNumber": d.Serial,
		"CapacityBytes": d.Bytes, "MediaType": d.Media, "Protocol": d.Protocol, "Status": status(d.Health),
	})
}

func (s *Server) power(w http.ResponseWriter, r *http.Request, sys *system) {
	psus := []map[string]any{}
	for i, p := range sys.hw.PSUs {
		psus = append(psus, map[string]any{
			"@odata.id": fmt.Sprintf("%s#/PowerSupplies/%d", r.URL.Path, i), "MemberId": strconv.Itoa(i),
			"Name": fmt.Sprintf("Power Supply %d", i+1), "Model": p.Model, "SerialNumber": p.Serial,
			"PowerCapacityWatts": p.Watts, "PowerSupplyType": "AC", "Status": status(p.Health),
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#Power.v1_6_0.Power", "@odata.id": r.URL.Path, "Id": "Power", "Name": "Power",
		"PowerSupplies": psus, "PowerSupplies@odata.count": len(psus),
	})
}

func (s *Server) thermal(w http.ResponseWriter, r *http.Request, sys *system) {
	fans, temps := []map[string]any{}, []map[string]any{}
	for i, f := range sys.hw.Fans {
		fans = append(fans, map[string]any{
			"@odata.id": fmt.Sprintf("%s#/Fans/%d", r.URL.Path, i), "MemberId": strconv.Itoa(i),
			"Name": f.Name, "Reading": f.RPM, "ReadingUnits": "RPM", "Status": status(f.Health),
		})
	}
	for i, t := range sys.hw.Temps {
		temps = append(temps, map[string]any{
			"@odata.id": fmt.Sprintf("%s#/Temperatures/%d", r.URL.Path, i), "MemberId": strconv.Itoa(i),
			"Name": t.Name, "ReadingCelsius": t.Celsius, "Status": status(t.Health),
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#Thermal.v1_6_0.Thermal", "@odata.id": r.URL.Path, "Id": "Thermal", "Name": "Thermal",
		"Fans": fans, "Fans@odata.count": len(fans), "Temperatures": temps, "Temperatures@odata.count": len(temps),
	})
}

// firmwareID names a system's firmware entry in the one FirmwareInventory
// of the service: the system's name, a dash, the component.
func firmwareID(sys *system, fw Firmware) string { return sys.spec.Name + "-" + fw.ID }

func (s *Server) firmwareCollection(w http.ResponseWriter, _ *http.Request) {
	base := "/redfish/v1/UpdateService/FirmwareInventory"
	members := []map[string]string{}
	for _, id := range s.order {
		sys := s.systems[id]
		sys.mu.Lock()
		for _, fw := range sys.hw.Firmware {
			members = append(members, link(base+"/"+firmwareID(sys, fw)))
		}
		sys.mu.Unlock()
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#SoftwareInventoryCollection.SoftwareInventoryCollection", "@odata.id": base,
		"Name": "Firmware Collection", "Members": members, "Members@odata.count": len(members),
	})
}

func (s *Server) firmware(w http.ResponseWriter, r *http.Request) {
	for _, id := range s.order {
		sys := s.systems[id]
		sys.mu.Lock()
		fws := slices.Clone(sys.hw.Firmware)
		sys.mu.Unlock()
		for _, fw := range fws {
			if firmwareID(sys, fw) != r.PathValue("fw") {
				continue
			}
			// SoftwareId is the component as the site names it; the Id
			// carries the system's name, the inventory being the
			// service's, shared by its systems.
			writeJSON(w, http.StatusOK, map[string]any{
				"@odata.type": "#SoftwareInventory.v1_5_0.SoftwareInventory", "@odata.id": r.URL.Path,
				"Id": r.PathValue("fw"), "Name": fw.Name, "SoftwareId": fw.ID, "Version": fw.Version, "Updateable": fw.Updateable,
				"Status":      status("OK"),
				"RelatedItem": []map[string]string{link("/redfish/v1/Systems/" + sys.spec.Name)},
			})
			return
		}
	}
	redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no such firmware "+r.PathValue("fw"))
}

// biosVersion is the BIOS entry of the firmware inventory, which the
// ComputerSystem's BiosVersion repeats; sys.mu is held.
func (sys *system) biosVersion() string {
	for _, fw := range sys.hw.Firmware {
		if fw.ID == "BIOS" {
			return fw.Version
		}
	}
	return sys.spec.BIOSVersion
}

func (h *Hardware) processorSummary() map[string]any {
	cores := 0
	model := ""
	for _, c := range h.CPUs {
		cores += c.Cores
		model = c.Model
	}
	return map[string]any{"Count": len(h.CPUs), "CoreCount": cores, "Model": model, "Status": status("OK")}
}

func (h *Hardware) memorySummary() map[string]any {
	mib := 0
	for _, d := range h.DIMMs {
		mib += d.CapacityMiB
	}
	return map[string]any{"TotalSystemMemoryGiB": float64(mib) / 1024, "Status": status("OK")}
}
