package bmc

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/metal-dev/metal/internal/hwinv"
)

// ipmiHardware reads what an IPMI BMC knows of its machine beyond power,
// with ipmitool as bmclib reads neither: the FRU inventory (the board's
// and product's maker, name and serial) and the sensors of the SDR
// repository (temperatures, fans, power supplies) with the BMC's own
// verdict on each. Either that cannot be read is named in the gaps.
func (c *Client) ipmiHardware(ctx context.Context, inv *Inventory) {
	r := hwinv.Report{Source: ProtocolIPMI, ReadAt: time.Now().UTC()}
	if out, err := c.ipmitool(ctx, "fru", "print", "0"); err != nil {
		inv.Gaps = append(inv.Gaps, "fru: "+c.redact.scrub(err.Error()))
	} else if fru := parseFRU(out); len(fru) > 0 {
		r.FRU = fru
		inv.Manufacturer = first(fru["Product Manufacturer"], fru["Board Mfg"])
		inv.Model = first(fru["Product Name"], fru["Board Product"])
		inv.Serial = first(fru["Product Serial"], fru["Chassis Serial"], fru["Board Serial"])
	}
	if out, err := c.ipmitool(ctx, "sdr", "elist"); err != nil {
		inv.Gaps = append(inv.Gaps, "sdr: "+c.redact.scrub(err.Error()))
	} else {
		parseSDR(out, &r)
	}
	r.Sort()
	inv.Hardware = &r
}

// parseFRU reads `ipmitool fru print` ("Board Serial : BRD-42" lines)
// into fields by name.
func parseFRU(out string) map[string]string {
	fru := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" || k == "FRU Device Description" {
			continue
		}
		fru[k] = v
	}
	return fru
}

// IPMI entity IDs (IPMI 2.0 table 43-13) that say what a sensor watches.
const (
	entityPowerSupply = 10
	entityFan         = 29
)

// parseSDR reads `ipmitool sdr elist` ("FAN1 | 40h | ok | 29.1 | 4500
// RPM") into r's temperatures, fans and power supplies. The status
// column is the BMC's comparison with its thresholds: ok, nc (non-
// critical), cr (critical), nr (non-recoverable), each perhaps with an
// l or u for lower or upper; ns is no reading, and such a sensor is left
// out.
func parseSDR(out string, r *hwinv.Report) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if len(f) != 5 {
			continue
		}
		name, status, reading := strings.TrimSpace(f[0]), strings.TrimSpace(f[2]), strings.TrimSpace(f[4])
		entity, _, _ := strings.Cut(strings.TrimSpace(f[3]), ".")
		if status == "ns" || name == "" {
			continue
		}
		health := thresholdHealth(status)
		value, unit, _ := strings.Cut(reading, " ")
		num, numErr := strconv.ParseFloat(value, 64)
		switch {
		case numErr == nil && (unit == "degrees C" || unit == "degrees F"):
			if unit == "degrees F" {
				num = (num - 32) * 5 / 9
			}
			r.Temperatures = append(r.Temperatures, hwinv.Sensor{Name: name, Reading: num, Units: "Cel", Health: health})
		case numErr == nil && (unit == "RPM" || entity == strconv.Itoa(entityFan) && unit == "percent"):
			units := "RPM"
			if unit == "percent" {
				units = "Percent"
			}
			r.Fans = append(r.Fans, hwinv.Sensor{Name: name, Reading: num, Units: units, Health: health})
		case entity == strconv.Itoa(entityPowerSupply) && numErr != nil:
			// A discrete status: its asserted states, comma separated.
			if h, present := supplyHealth(reading); present {
				r.PSUs = append(r.PSUs, hwinv.PSU{Name: name, Health: worse(health, h)})
			}
		}
	}
}

// thresholdHealth turns ipmitool's status column into Redfish's words.
func thresholdHealth(status string) string {
	switch {
	case status == "ok":
		return "OK"
	case strings.HasSuffix(status, "nr"), strings.HasSuffix(status, "cr"):
		return "Critical"
	case strings.HasSuffix(status, "nc"):
		return "Warning"
	}
	return ""
}

// supplyHealth reads a power supply's asserted states (IPMI 2.0 table
// 42-3, sensor type 08h), and whether the supply is there at all.
func supplyHealth(states string) (health string, present bool) {
	s := strings.ToLower(states)
	switch {
	case strings.Contains(s, "failure detected"), strings.Contains(s, "ac lost"),
		strings.Contains(s, "input lost"), strings.Contains(s, "out-of-range"):
		return "Critical", true
	case strings.Contains(s, "predictive failure"), strings.Contains(s, "config error"):
		return "Warning", true
	case strings.Contains(s, "presence detected"):
		return "OK", true
	}
	return "", false
}

// worse is the graver of two health words.
func worse(a, b string) string {
	rank := map[string]int{"": 0, "OK": 1, "Warning": 2, "Critical": 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
