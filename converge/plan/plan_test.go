package plan_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/site"
)

const base = `
site "t" {}
variable "pw" {
  sensitive = true
  default   = "pw"
}
network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
}
image "a" {
  disk = "file:///a.raw"
}
image "b" {
  disk = "file:///b.raw"
}
`

func load(t *testing.T, machines string) *site.Site {
	t.Helper()
	res, diags := site.Load("t.hcl", []byte(base+machines), site.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return res.Site
}

func TestCompute(t *testing.T) {
	before := load(t, `
machine "keep" {
  mac   = "52:54:00:00:00:01"
  ip    = "192.0.2.11"
  image = image.a
}
machine "power" {
  mac   = "52:54:00:00:00:02"
  image = image.a
}
machine "reimage" {
  mac   = "52:54:00:00:00:03"
  image = image.a
}
machine "gone" {
  mac = "52:54:00:00:00:04"
}
`)
	after := load(t, `
machine "keep" {
  mac   = "52:54:00:00:00:01"
  ip    = "192.0.2.11"
  image = image.a
}
machine "power" {
  mac   = "52:54:00:00:00:02"
  image = image.a
  power = "off"
}
machine "reimage" {
  mac   = "52:54:00:00:00:03"
  image = image.b
}
machine "new" {
  mac = "52:54:00:00:00:05"
  bmc {
    address  = "192.0.2.100"
    username = "u"
    password = var.pw
  }
}
`)
	observed := map[string]plan.Attributes{}
	for _, m := range before.Machines {
		observed[m.Name] = plan.MachineAttributes(before, m)
	}
	p := plan.Compute(after, observed)

	actions := map[string]plan.Action{}
	for _, c := range p.Changes {
		actions[c.Machine] = c.Action
	}
	want := map[string]plan.Action{
		"keep": plan.NoOp, "power": plan.Update, "reimage": plan.Replace, "gone": plan.Delete, "new": plan.Create,
	}
	if diff := cmp.Diff(want, actions); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(plan.Summary{Create: 1, Update: 1, Replace: 1, Delete: 1, NoOp: 1}, p.Summary); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
	for _, c := range p.Changes {
		switch c.Machine {
		case "power":
			want := []plan.AttrChange{{Name: "power", Before: &plan.Value{Text: "on"}, After: &plan.Value{Text: "off"}}}
			if diff := cmp.Diff(want, c.Attrs); diff != "" {
				t.Errorf("power attrs (-want +got):\n%s", diff)
			}
		case "reimage":
			for _, a := range c.Attrs {
				if (a.Name == "image" || a.Name == "image.source") != a.ForcesReplace {
					t.Errorf("reimage: %s forces replace = %v", a.Name, a.ForcesReplace)
				}
			}
		case "new":
			for _, a := range c.Attrs {
				if a.Name == "bmc.password" && (!a.After.Sensitive || a.After.Text == "pw") {
					t.Errorf("password attribute leaks: %+v", a.After)
				}
			}
		}
	}

	// The same inputs give the same digest; different inputs another.
	if again := plan.Compute(after, observed); again.Digest != p.Digest {
		t.Error("digest not stable")
	}
	if other := plan.Compute(after, nil); other.Digest == p.Digest {
		t.Error("digest ignores observed state")
	}
	if !p.HasChanges() {
		t.Error("HasChanges = false")
	}
	if noop := plan.Compute(before, observed); noop.HasChanges() {
		t.Errorf("replanning the applied site changes %+v", noop.Summary)
	}
}
