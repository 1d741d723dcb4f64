package site_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/site"
)

// TestWithBMC: the machines a BMC verb works on, and the names it refuses.
func TestWithBMC(t *testing.T) {
	t.Parallel()
	src := `
site "t" {}
network "n" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
}
machine "a" {
  mac = "02:00:00:00:00:01"
  ip  = "192.0.2.11"
  bmc {
    address  = "https://192.0.2.201"
    username = "admin"
    password = "pw"
  }
}
machine "b" {
  mac = "02:00:00:00:00:02"
  ip  = "192.0.2.12"
}
`
	res, diags := site.Load("site.hcl", []byte(src), site.Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	tests := map[string]struct {
		names []string
		want  []string
		err   string
	}{
		"all with a bmc": {want: []string{"a"}},
		"named":          {names: []string{"a"}, want: []string{"a"}},
		"no bmc block":   {names: []string{"b"}, err: `machine "b" has no bmc block`},
		"undeclared":     {names: []string{"c"}, err: `site "t" has no machine "c"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ms, err := res.Site.WithBMC(tc.names)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range ms {
				got = append(got, m.Name)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("machines (-want +got):\n%s", d)
			}
		})
	}
}
