package bmc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
)

// TestRAIDVolumes builds and deletes volumes on the virtual BMC's RAID
// controller; what a controller refuses (a level the drives cannot make,
// a drive in two volumes, more than the drives hold) fails with its
// reason; a volume asked for twice is built once.
func TestRAIDVolumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	spec := virtual.MachineSpec{Name: "raid-01", Machine: virtual.NewSim(virtual.SimOptions{Name: "raid-01"})}
	hw := virtual.DefaultHardware(spec)
	hw.Drives = []virtual.Drive{{Model: "A", Bytes: 100 << 30}, {Model: "B", Bytes: 100 << 30}, {Model: "C", Bytes: 200 << 30}}
	spec.Hardware = &hw
	url, _ := testpeer.VBMC(t, false, "admin", testPassword, testpeer.NewLog(t).Logger, spec)
	c := firmwareClient(t, url, "raid-01")
	st, err := c.Storage(ctx)
	if err != nil || len(st.Drives) != 3 || len(st.Volumes) != 0 || !strings.Contains(strings.Join(st.RAIDTypes, ","), "RAID5") {
		t.Fatalf("storage: %+v, %v", st, err)
	}
	d := func(i int) string { return st.Drives[i].URI }
	mirror := bmc.NewVolume{Name: "system", RAIDType: "RAID1", Drives: []string{d(0), d(1)}}
	// In order: each step sees the volumes the steps before built.
	for _, tc := range []struct {
		name string
		v    bmc.NewVolume
		fail string
	}{
		{"mirror", mirror, ""},
		{"mirror again", mirror, ""},
		{"drive in two", bmc.NewVolume{Name: "x", RAIDType: "RAID0", Drives: []string{d(1)}}, "already in a volume"},
		{"RAID5 on one drive", bmc.NewVolume{Name: "y", RAIDType: "RAID5", Drives: []string{d(2)}}, "RAID5 needs 3 drives"},
		{"more than it holds", bmc.NewVolume{Name: "z", RAIDType: "RAID0", Bytes: 300 << 30, Drives: []string{d(2)}}, "more than RAID0"},
		{"unknown drive", bmc.NewVolume{Name: "w", RAIDType: "RAID0", Drives: []string{"/redfish/v1/Systems/raid-01/Storage/1/Drives/9"}}, "no drive"},
		{"unknown level", bmc.NewVolume{Name: "v", RAIDType: "RAID6", Drives: []string{d(2)}}, "RAIDType"},
		{"the rest, all of it", bmc.NewVolume{Name: "data", RAIDType: "RAID0", Drives: []string{d(2)}}, ""},
	} {
		err := c.CreateVolume(ctx, tc.v)
		if (err != nil) != (tc.fail != "") || (err != nil && !strings.Contains(err.Error(), tc.fail)) {
			t.Errorf("%s: %v, want failure %q", tc.name, err, tc.fail)
		}
	}
	st, err = c.Storage(ctx)
	if err != nil || len(st.Volumes) != 2 || st.Volumes[0].Bytes != 100<<30 || st.Volumes[1].Bytes != 200<<30 {
		t.Fatalf("volumes: %+v, %v", st.Volumes, err)
	}
	if err := c.DeleteVolume(ctx, st.Volumes[0].URI); err != nil {
		t.Fatal(err)
	}
	if st, err = c.Storage(ctx); err != nil || len(st.Volumes) != 1 || st.Volumes[0].Name != "data" {
		t.Errorf("after the delete: %+v, %v", st.Volumes, err)
	}
}
