package hwinv

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDrift(t *testing.T) {
	base := Report{
		Disks: []Disk{{Name: "0", Serial: "S1"}, {Name: "1", Serial: "S2"}},
		NICs:  []NIC{{MAC: "52:54:00:00:00:01"}},
		PSUs:  []PSU{{Serial: "P1"}},
		FRU:   map[string]string{"Board Serial": "BRD-1", "Product Serial": "SRV-1"},
	}
	tests := map[string]struct {
		edit func(r *Report)
		want []string
	}{
		"same":         {edit: func(*Report) {}},
		"MAC case":     {edit: func(r *Report) { r.NICs = []NIC{{MAC: "52:54:00:00:00:01"}} }},
		"disk swapped": {edit: func(r *Report) { r.Disks = []Disk{{Name: "0", Serial: "S1"}, {Name: "1", Serial: "S9"}} }, want: []string{"disk swapped: S2 gone, S9 new"}},
		"NIC gone, PSU added": {
			edit: func(r *Report) { r.NICs = nil; r.PSUs = append(r.PSUs, PSU{Serial: "P2"}) },
			want: []string{"NIC gone: 52:54:00:00:00:01", "PSU new: P2"},
		},
		"IPMI board swapped": {
			edit: func(r *Report) { r.FRU = map[string]string{"Board Serial": "BRD-2", "Product Serial": "SRV-1"} },
			want: []string{"FRU Board Serial was BRD-1, is BRD-2"},
		},
		"FRU not read this time": {edit: func(r *Report) { r.FRU = nil }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			now := base
			now.Disks = append([]Disk(nil), base.Disks...)
			tc.edit(&now)
			if d := cmp.Diff(tc.want, Drift(base, now)); d != "" {
				t.Errorf("drift (-want +got):\n%s", d)
			}
		})
	}
}
