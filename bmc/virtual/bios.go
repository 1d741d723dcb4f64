package virtual

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
)

// biosRegistryID names the attribute registry every virtual system's Bios
// points at.
const biosRegistryID = "BiosAttributeRegistry.v1_0_0"

// biosAttr is one attribute of the virtual BIOS's registry.
type biosAttr struct {
	Name     string
	Type     string // Enumeration, Integer, Boolean, String
	Default  any
	Values   []string // Enumeration
	Min, Max int64    // Integer
	ReadOnly bool
}

// biosAttrs are the virtual BIOS's attributes, named as common server
// BIOSes name them (DMTF's public-rackmount1 mockup, Dell, HPE).
var biosAttrs = []biosAttr{
	{Name: "BootMode", Type: "Enumeration", Default: "Uefi", Values: []string{"Uefi", "LegacyBios"}},
	{Name: "ProcHyperThreading", Type: "Enumeration", Default: "Enabled", Values: []string{"Enabled", "Disabled"}},
	{Name: "ProcVirtualization", Type: "Enumeration", Default: "Disabled", Values: []string{"Enabled", "Disabled"}},
	{Name: "SriovGlobalEnable", Type: "Enumeration", Default: "Disabled", Values: []string{"Enabled", "Disabled"}},
	{Name: "WorkloadProfile", Type: "Enumeration", Default: "Balanced", Values: []string{"Balanced", "Performance", "PowerSaving"}},
	{Name: "PxeRetries", Type: "Integer", Default: int64(1), Min: 0, Max: 10},
	{Name: "UsbPortsEnabled", Type: "Boolean", Default: true},
	{Name: "AssetTag", Type: "String", Default: ""},
	{Name: "BiosRevision", Type: "String", Default: "1.0.0", ReadOnly: true},
}

func biosAttrNamed(name string) (biosAttr, bool) {
	for _, a := range biosAttrs {
		if a.Name == name {
			return a, true
		}
	}
	return biosAttr{}, false
}

// defaultBIOS is a fresh system's attributes, with spec's overrides.
func defaultBIOS(over map[string]any) map[string]any {
	out := make(map[string]any, len(biosAttrs))
	for _, a := range biosAttrs {
		out[a.Name] = a.Default
	}
	maps.Copy(out, over)
	return out
}

// checkBIOSValue says what is wrong with setting attribute name to v, as
// a Redfish message ID and text, or "" when it is allowed.
func checkBIOSValue(name string, v any) (string, string) {
	a, ok := biosAttrNamed(name)
	if !ok {
		return "Base.1.8.PropertyUnknown", fmt.Sprintf("the BIOS has no attribute %s", name)
	}
	if a.ReadOnly {
		return "Base.1.8.PropertyNotWritable", fmt.Sprintf("BIOS attribute %s is read-only", name)
	}
	switch a.Type {
	case "Enumeration":
		s, ok := v.(string)
		if !ok || !slices.Contains(a.Values, s) {
			return "Base.1.8.PropertyValueNotInList", fmt.Sprintf("BIOS attribute %s must be one of %s, got %v", name, strings.Join(a.Values, ", "), v)
		}
	case "Integer":
		f, ok := v.(float64)
		if !ok || f != float64(int64(f)) || int64(f) < a.Min || int64(f) > a.Max {
			return "Base.1.8.PropertyValueTypeError", fmt.Sprintf("BIOS attribute %s must be an integer within [%d, %d], got %v", name, a.Min, a.Max, v)
		}
	case "Boolean":
		if _, ok := v.(bool); !ok {
			return "Base.1.8.PropertyValueTypeError", fmt.Sprintf("BIOS attribute %s must be a JSON boolean, got %v", name, v)
		}
	case "String":
		if _, ok := v.(string); !ok {
			return "Base.1.8.PropertyValueTypeError", fmt.Sprintf("BIOS attribute %s must be a string, got %v", name, v)
		}
	}
	return "", ""
}

func (s *Server) biosRoutes(auth func(string, http.HandlerFunc)) {
	auth("GET /redfish/v1/Systems/{id}/Bios", s.withBIOS(s.getBIOS))
	auth("GET /redfish/v1/Systems/{id}/Bios/Settings", s.withBIOS(s.getBIOSSettings))
	auth("PATCH /redfish/v1/Systems/{id}/Bios/Settings", s.withBIOS(s.patchBIOSSettings))
	auth("GET /redfish/v1/Registries", s.registries)
	auth("GET /redfish/v1/Registries/{reg}", s.registryFile)
	auth("GET /redfish/v1/Registries/{reg}/Registry", s.registry)
}

// withBIOS is withSystem for systems that have a Bios resource.
func (s *Server) withBIOS(h func(http.ResponseWriter, *http.Request, *system)) http.HandlerFunc {
	return s.withSystem(func(w http.ResponseWriter, r *http.Request, sys *system) {
		if sys.spec.NoBIOS {
			redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "this system has no Bios resource")
			return
		}
		h(w, r, sys)
	})
}

func (s *Server) getBIOS(w http.ResponseWriter, _ *http.Request, sys *system) {
	base := "/redfish/v1/Systems/" + sys.spec.Name + "/Bios"
	sys.mu.Lock()
	attrs := maps.Clone(sys.bios)
	sys.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type":       "#Bios.v1_2_0.Bios",
		"@odata.id":         base,
		"Id":                "Bios",
		"Name":              "BIOS Configuration Current Settings",
		"AttributeRegistry": biosRegistryID,
		"Attributes":        attrs,
		"@Redfish.Settings": map[string]any{
			"@odata.type":         "#Settings.v1_3_5.Settings",
			"SettingsObject":      link(base + "/Settings"),
			"SupportedApplyTimes": []string{"OnReset"},
		},
	})
}

func (s *Server) getBIOSSettings(w http.ResponseWriter, _ *http.Request, sys *system) {
	sys.mu.Lock()
	// The settings object shows what the next reset applies: the values
	// in effect with the pending ones over them, as real BMCs do.
	attrs := maps.Clone(sys.bios)
	maps.Copy(attrs, sys.biosPending)
	sys.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#Bios.v1_2_0.Bios",
		"@odata.id":   "/redfish/v1/Systems/" + sys.spec.Name + "/Bios/Settings",
		"Id":          "Settings",
		"Name":        "BIOS Configuration Pending Settings",
		"Attributes":  attrs,
	})
}

func (s *Server) patchBIOSSettings(w http.ResponseWriter, r *http.Request, sys *system) {
	var body struct {
		Attributes map[string]any `json:"Attributes"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "the request body is not valid JSON: "+err.Error())
		return
	}
	if len(body.Attributes) == 0 {
		redfishError(w, http.StatusBadRequest, "Base.1.8.PropertyMissing", "PATCH the BIOS settings with Attributes")
		return
	}
	names := slices.Sorted(maps.Keys(body.Attributes))
	for _, k := range names {
		if code, msg := checkBIOSValue(k, body.Attributes[k]); code != "" {
			redfishError(w, http.StatusBadRequest, code, msg)
			return
		}
	}
	sys.mu.Lock()
	if sys.biosPending == nil {
		sys.biosPending = map[string]any{}
	}
	for _, k := range names {
		v := body.Attributes[k]
		if f, ok := v.(float64); ok {
			v = int64(f)
		}
		sys.biosPending[k] = v
	}
	sys.biosPatches++
	err := s.saveState(sys)
	sys.mu.Unlock()
	if err != nil {
		s.machineError(w, sys, "keep the BIOS settings", err)
		return
	}
	s.log.Info("bios settings staged", "machine", sys.spec.Name, "attributes", strings.Join(names, ","))
	w.WriteHeader(http.StatusNoContent)
}

// applyPendingBIOS moves staged settings into effect: the system is
// starting (a reset, or power on from off). sys.mu is held.
func (s *Server) applyPendingBIOS(sys *system) {
	if len(sys.biosPending) == 0 {
		return
	}
	maps.Copy(sys.bios, sys.biosPending)
	s.log.Info("bios settings applied at reset", "machine", sys.spec.Name, "attributes", len(sys.biosPending))
	sys.biosPending = nil
	if err := s.saveState(sys); err != nil {
		s.log.Error("keep the BIOS settings", "machine", sys.spec.Name, "err", err)
	}
}

func (s *Server) registries(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#MessageRegistryFileCollection.MessageRegistryFileCollection",
		"@odata.id":   "/redfish/v1/Registries", "Name": "Registry File Collection",
		"Members":             []map[string]string{link("/redfish/v1/Registries/" + biosRegistryID)},
		"Members@odata.count": 1,
	})
}

func (s *Server) registryFile(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("reg") != biosRegistryID {
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no registry "+r.PathValue("reg"))
		return
	}
	base := "/redfish/v1/Registries/" + biosRegistryID
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#MessageRegistryFile.v1_1_0.MessageRegistryFile",
		"@odata.id":   base, "Id": biosRegistryID, "Name": "BIOS Attribute Registry File",
		"Registry":  biosRegistryID,
		"Languages": []string{"en"},
		"Location":  []map[string]string{{"Language": "en", "Uri": base + "/Registry"}},
	})
}

func (s *Server) registry(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("reg") != biosRegistryID {
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no registry "+r.PathValue("reg"))
		return
	}
	attrs := make([]map[string]any, 0, len(biosAttrs))
	for _, a := range biosAttrs {
		e := map[string]any{
			"AttributeName": a.Name, "Type": a.Type, "DefaultValue": a.Default,
			"ReadOnly": a.ReadOnly, "DisplayName": a.Name,
		}
		switch a.Type {
		case "Enumeration":
			var vs []map[string]string
			for _, v := range a.Values {
				vs = append(vs, map[string]string{"ValueName": v, "ValueDisplayName": v})
			}
			e["Value"] = vs
		case "Integer":
			e["LowerBound"], e["UpperBound"] = a.Min, a.Max
		}
		attrs = append(attrs, e)
	}
	sort.Slice(attrs, func(i, j int) bool { return attrs[i]["AttributeName"].(string) < attrs[j]["AttributeName"].(string) })
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type":     "#AttributeRegistry.v1_3_0.AttributeRegistry",
		"Id":              biosRegistryID,
		"Name":            "metal virtual BIOS Attribute Registry",
		"Language":        "en",
		"RegistryVersion": "1.0.0",
		"OwningEntity":    "metal",
		"RegistryEntries": map[string]any{"Attributes": attrs},
	})
}

// BIOS returns the attributes in effect on machine name and those
// pending, and how many PATCHes of its settings the server took.
func (s *Server) BIOS(name string) (attrs, pending map[string]any, patches int) {
	sys, ok := s.systems[name]
	if !ok {
		return nil, nil, 0
	}
	sys.mu.Lock()
	defer sys.mu.Unlock()
	return maps.Clone(sys.bios), maps.Clone(sys.biosPending), sys.biosPatches
}
