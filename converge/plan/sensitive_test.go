package plan_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/site"
)

// TestSensitiveAttributes: attributes computed from a sensitive variable
// are marked, carry a digest (a change still shows) and never the value,
// in the plan and in the inventory's copy of the applied attributes.
func TestSensitiveAttributes(t *testing.T) {
	t.Parallel()
	const secret = "Qw7-plan-secret-303"
	src := `
site "t" {}
variable "secret" { sensitive = true }
network "n" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
}
machine "m1" {
  mac    = "02:00:00:00:00:01"
  ip     = "192.0.2.11"
  labels = { owner = "team-${var.secret}", zone = "a" }
  bmc {
    address  = "https://192.0.2.200"
    username = var.secret
    password = var.secret
  }
}
`
	load := func(value string) *site.Site {
		res, diags := site.Load("t.hcl", []byte(src), site.Options{Env: []string{"METAL_VAR_secret=" + value}})
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return res.Site
	}
	s := load(secret)
	a := plan.MachineAttributes(s, s.Machines[0])
	for _, name := range []string{"labels.owner", "bmc.username", "bmc.password"} {
		if !a[name].Sensitive {
			t.Errorf("%s is not marked sensitive: %+v", name, a[name])
		}
	}
	if a["labels.zone"].Sensitive || a["labels.zone"].Text != "a" {
		t.Errorf("labels.zone = %+v, want plain a", a["labels.zone"])
	}
	stored := plan.FromStrings(a.Strings())
	for name, v := range a {
		if stored[name] != v {
			t.Errorf("%s: stored and read back as %+v, was %+v", name, stored[name], v)
		}
	}
	b, _ := json.Marshal(a)
	if strings.Contains(string(b), secret) || strings.Contains(strings.ToUpper(string(b)), strings.ToUpper(secret)) {
		t.Errorf("attributes hold the secret: %s", b)
	}
	// Another secret: the plan sees the change, without showing either.
	s2 := load(secret + "-rotated")
	p := plan.Compute(s2, map[string]plan.Attributes{"m1": stored})
	found := false
	for _, c := range p.Changes {
		for _, ac := range c.Attrs {
			if ac.Name == "labels.owner" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("a changed sensitive label is not in the plan: %+v", p.Changes)
	}
	if b, _ := json.Marshal(p); strings.Contains(string(b), secret) {
		t.Errorf("the plan's JSON holds the secret: %s", b)
	}
}
