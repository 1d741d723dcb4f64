package view

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/internal/hwinv"
	"github.com/metal-dev/metal/inventory"
)

func TestTableFitsWidth(t *testing.T) {
	rows := [][]string{{"NAME", "MAC", "STATE"}, {"a-rather-long-machine-name-in-rack-07", "52:54:00:00:01:01", "ready"}}
	tests := map[string]struct {
		width int
		want  string
	}{
		"no limit":                {0, "NAME                                   MAC                STATE\na-rather-long-machine-name-in-rack-07  52:54:00:00:01:01  ready\n"},
		"narrow":                  {40, "NAME            MAC                STATE\na-rather-long…  52:54:00:00:01:01  ready\n"},
		"too narrow for the rest": {10, "NAME      MAC                STATE\na-rathe…  52:54:00:00:01:01  ready\n"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			Table(&b, rows, tc.width)
			if d := cmp.Diff(tc.want, b.String()); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestMachineIPMIReading: the FRU and sensors an IPMI BMC gave show in
// `metal machines show` with the BMC's verdict on each.
func TestMachineIPMIReading(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	m := inventory.Machine{Name: "ipmi-01", BMCHardware: &hwinv.Report{Source: "ipmi", ReadAt: now.Add(-time.Minute),
		PSUs:         []hwinv.PSU{{Name: "PSU1 Status", Health: "OK"}, {Name: "PSU2 Status", Health: "Critical"}},
		Fans:         []hwinv.Sensor{{Name: "FAN1", Reading: 4500, Units: "RPM", Health: "OK"}},
		Temperatures: []hwinv.Sensor{{Name: "Inlet Temp", Reading: 41, Units: "Cel", Health: "Critical"}},
		FRU:          map[string]string{"Board Product": "X11-DPi", "Board Serial": "BRD-0042"},
	}}
	var b strings.Builder
	Machine(&b, MachineDetail{Machine: m}, now)
	for _, want := range []string{
		"BMC inventory (ipmi, read ", "1m ago)\n",
		"Summary:       board X11-DPi serial BRD-0042, 2 PSUs, 1 fan, 1 temperature; unhealthy: PSU PSU2 Status: Critical; temperature Inlet Temp: Critical",
		"PSU PSU1 Status: OK\n", "PSU PSU2 Status: [Critical]\n", "Fan FAN1:      4500 RPM\n", "Temp Inlet Temp: 41.0 °C [Critical]\n",
		"FRU Board Serial: BRD-0042\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("machines show lacks %q:\n%s", want, b.String())
		}
	}
}
