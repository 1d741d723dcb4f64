package apply_test

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/inventory"
)

// volumes lists a machine's volumes on its virtual BMC as "name level
// drives size".
func volumes(l *lab, name string) []string {
	var out []string
	for _, v := range l.fleet.BMC(name).Volumes(name) {
		out = append(out, fmt.Sprintf("%s %s %v %dGiB", v.Name, v.RAIDType, v.Drives, v.Bytes>>30))
	}
	sort.Strings(out)
	return out
}

// TestRAIDPlanApplyPlan builds a RAID layout before the install (a mirror
// on any two drives, a stripe of a set size on two named ones), finds the
// next plan empty, and rebuilds the stripe as a mirror: planned as
// destructive, refused without AllowDestroy, done with it, the mirror
// untouched.
func TestRAIDPlanApplyPlan(t *testing.T) {
	l := newLabWith(t, applytest.Options{Machines: 1, Drives: 4, RebootAfter: 5 * time.Millisecond})
	ctx := ctxT(t, 60*time.Second)
	layout := func(data string) string {
		return `  raid "system" {
    level = "RAID1"
    count = 2
  }
  raid "data" {
` + data + `
  }`
	}
	s := biosSite(l, layout(`    level  = "RAID0"
    drives = ["Drive 2", "3"]
    size   = "100GiB"`))
	p := l.planHW(ctx, s)
	if p.Summary.Create != 1 || len(p.Destructive()) != 0 {
		t.Fatalf("first plan: %+v", p)
	}
	if res, err := l.engine(s, nil).Apply(ctx, p); err != nil || res.State != inventory.RunDone {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	want := fmt.Sprint([]string{"data RAID0 [2 3] 100GiB", "system RAID1 [0 1] 64GiB"})
	if got := fmt.Sprint(volumes(l, "m0000")); got != want {
		t.Errorf("volumes %s, want %s", got, want)
	}
	if p := l.planHW(ctx, s); p.HasChanges() || len(p.Findings) > 0 {
		t.Fatalf("plan after apply: %+v", p)
	}

	s2 := biosSite(l, layout(`    level  = "RAID1"
    drives = ["Drive 2", "3"]`))
	p = l.planHW(ctx, s2)
	if len(p.Destructive()) != 1 || p.Summary.Update != 1 {
		t.Fatalf("a rebuilt volume is not destructive: %+v", p)
	}
	if _, err := l.engine(s2, nil).Apply(ctx, p); !errors.Is(err, apply.ErrDestroyNotAllowed) {
		t.Fatalf("rebuild without allow-destroy: %v", err)
	}
	if res, err := l.engine(s2, func(o *apply.Options) { o.AllowDestroy = true }).Apply(ctx, p); err != nil || res.State != inventory.RunDone {
		t.Fatalf("rebuild: %+v, %v", res, err)
	}
	want = fmt.Sprint([]string{"data RAID1 [2 3] 64GiB", "system RAID1 [0 1] 64GiB"})
	if got := fmt.Sprint(volumes(l, "m0000")); got != want {
		t.Errorf("volumes after the rebuild %s, want %s", got, want)
	}
	if p := l.planHW(ctx, s2); p.HasChanges() || len(p.Findings) > 0 {
		t.Fatalf("plan after the rebuild: %+v", p)
	}

	// Someone deletes the mirror by hand: drift, and the plan builds it
	// again (a create, not destructive).
	hand, err := bmc.New(bmc.Config{Machine: "m0000", Protocol: "redfish", Address: l.fleet.Addr("m0000"), Username: applytest.User, Password: applytest.Password}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := hand.Storage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.Volumes {
		if v.Name == "system" {
			if err := hand.DeleteVolume(ctx, v.URI); err != nil {
				t.Fatal(err)
			}
		}
	}
	p = l.planHW(ctx, s2)
	if p.Summary.Update != 1 || len(p.Destructive()) != 0 || len(p.Findings) != 1 || !strings.Contains(p.Findings[0].Message, "drift: volume system (RAID1 on 2 drives) that metal built is gone") {
		t.Fatalf("plan after the mirror was deleted by hand: %+v", p)
	}
}
