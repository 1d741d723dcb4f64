package scaffold_test

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclwrite"

	"github.com/metal-dev/metal/bmc/scan"
	"github.com/metal-dev/metal/site"
	"github.com/metal-dev/metal/site/scaffold"
)

// labOptions is the QEMU lab's boot network (lab/lab.go).
func labOptions() scaffold.Options {
	return scaffold.Options{Name: "lab", Network: "lab", Interface: "mtl-br0", Subnet: netip.MustParsePrefix("192.0.2.0/24"),
		BMCSubnet: netip.MustParsePrefix("192.0.2.0/24")}
}

func load(t *testing.T, src []byte, vars ...string) *site.Site {
	t.Helper()
	res, diags := site.Load("site.hcl", src, site.Options{Vars: vars})
	if diags.HasErrors() {
		t.Fatalf("the written site does not validate: %v\n%s", diags, src)
	}
	if f := hclwrite.Format(src); len(vars) == 0 && string(f) != string(src) {
		t.Errorf("the written site is not formatted as metal fmt would:\n%s", f)
	}
	return res.Site
}

// TestRenderLab: the site written for the lab's network validates, and
// says what the lab's own site says about the network.
func TestRenderLab(t *testing.T) {
	src, err := scaffold.Render(labOptions())
	if err != nil {
		t.Fatal(err)
	}
	s := load(t, src)
	if len(s.Networks) != 1 {
		t.Fatalf("%d networks, want 1", len(s.Networks))
	}
	n := s.Networks[0]
	if n.Interface != "mtl-br0" || n.Subnet.String() != "192.0.2.0/24" || n.Gateway.String() != "192.0.2.1" {
		t.Errorf("network %+v", n)
	}
	if n.PoolStart.String() != "192.0.2.192" || n.PoolEnd.String() != "192.0.2.254" {
		t.Errorf("pool %s-%s, want 192.0.2.192-192.0.2.254", n.PoolStart, n.PoolEnd)
	}
	if s.Settings.Listen != "192.0.2.1:8080" {
		t.Errorf("listen %q", s.Settings.Listen)
	}
	if !strings.Contains(string(src), "found no BMC") {
		t.Error("a scan that found nothing is not said")
	}
}

// TestRenderBMCs: found BMCs are commented machine blocks that validate
// once uncommented and given a MAC and the password.
func TestRenderBMCs(t *testing.T) {
	o := labOptions()
	o.BMCs = []scan.Found{
		{Addr: netip.MustParseAddr("192.0.2.2"), Protocol: "redfish", Address: "http://192.0.2.2:8001", Product: "metal virtual BMC"},
		{Addr: netip.MustParseAddr("192.0.2.3"), Protocol: "ipmi", Address: "192.0.2.3"},
	}
	src, err := scaffold.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if s := load(t, src); len(s.Machines) != 0 {
		t.Errorf("%d machines declared, want them commented", len(s.Machines))
	}
	// Uncomment the variable, the image and the machines; give each its MAC.
	text := string(src)
	for _, block := range []string{`variable "bmc_password"`, `image "debian-12"`, `machine "m-192-0-2-2"`, `machine "m-192-0-2-3"`} {
		re := regexp.MustCompile(`(?ms)^# ` + regexp.QuoteMeta(block) + `.*?^# }\n`)
		m := re.FindString(text)
		if m == "" {
			t.Fatalf("no commented %s block in:\n%s", block, src)
		}
		un := regexp.MustCompile(`(?m)^# ?`).ReplaceAllString(m, "")
		text = strings.Replace(text, m, un, 1)
	}
	n := 0
	text = regexp.MustCompile(`02:00:00:00:00:00`).ReplaceAllStringFunc(text, func(string) string {
		n++
		return "02:00:00:00:00:0" + string(rune('0'+n))
	})
	text = strings.Replace(text, `"sha256:..."`, `"sha256:`+strings.Repeat("ab", 32)+`"`, 1)
	s := load(t, []byte(text), "bmc_password=x")
	if len(s.Machines) != 2 {
		t.Fatalf("%d machines once uncommented, want 2:\n%s", len(s.Machines), text)
	}
	if s.Machines[0].BMC == nil || s.Machines[0].BMC.Protocol != "redfish" || s.Machines[1].BMC.Protocol != "ipmi" {
		t.Errorf("machines' BMCs: %+v %+v", s.Machines[0].BMC, s.Machines[1].BMC)
	}
}

func TestRenderRefuses(t *testing.T) {
	tests := map[string]struct {
		edit func(*scaffold.Options)
		want string
	}{
		"no subnet":         {func(o *scaffold.Options) { o.Subnet = netip.Prefix{} }, "subnet is missing"},
		"no interface":      {func(o *scaffold.Options) { o.Interface = "" }, "interface on the boot network is missing"},
		"a pool outside":    {func(o *scaffold.Options) { o.PoolEnd = netip.MustParseAddr("192.0.3.9") }, "outside the subnet"},
		"the pool holds gw": {func(o *scaffold.Options) { o.PoolStart = netip.MustParseAddr("192.0.2.1") }, "holds 192.0.2.1"},
		"a bad name":        {func(o *scaffold.Options) { o.Name = "My Site" }, "site name"},
		"a tiny subnet":     {func(o *scaffold.Options) { o.Subnet = netip.MustParsePrefix("192.0.2.0/30") }, "too small"},
		"an unknown mode":   {func(o *scaffold.Options) { o.Mode = "relay" }, "want dhcp or proxy"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := labOptions()
			tc.edit(&o)
			if _, err := scaffold.Render(o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Render: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
