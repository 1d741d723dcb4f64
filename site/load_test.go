package site_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"

	"github.com/metal-dev/metal/site"
)

var update = flag.Bool("update", false, "rewrite the golden files of invalid fixtures")

// render prints diagnostics as `metal validate` does, without color.
func render(t *testing.T, res *site.Result, diags hcl.Diagnostics) string {
	t.Helper()
	var buf bytes.Buffer
	w := hcl.NewDiagnosticTextWriter(&buf, res.Files, 100, false)
	if err := w.WriteDiagnostics(diags); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestExamplesAreValid(t *testing.T) {
	paths, err := filepath.Glob("../hcl-examples/*.hcl")
	if err != nil || len(paths) < 4 {
		t.Fatalf("want at least 4 examples, got %v (%v)", paths, err)
	}
	minMachines := map[string]int{"homelab.hcl": 3, "colo.hcl": 200, "qemu-lab.hcl": 2, "dr-standby.hcl": 1}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			res, diags := site.LoadFile(p, site.Options{})
			if len(diags) > 0 {
				t.Fatalf("diagnostics:\n%s", render(t, res, diags))
			}
			if got, want := len(res.Site.Machines), minMachines[filepath.Base(p)]; got < want {
				t.Errorf("%d machines, want at least %d", got, want)
			}
		})
	}
}

// TestInvalidFixtures loads each testdata/invalid-*.hcl and compares the
// rendered diagnostics (file:line, snippet, message) with its .golden file.
func TestInvalidFixtures(t *testing.T) {
	paths, _ := filepath.Glob("testdata/invalid-*.hcl")
	if len(paths) == 0 {
		t.Fatal("no fixtures")
	}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".hcl")
		t.Run(name, func(t *testing.T) {
			res, diags := site.LoadFile(p, site.Options{})
			if !diags.HasErrors() {
				t.Fatalf("loaded without errors")
			}
			if res.Site != nil {
				t.Errorf("an invalid file returned a site")
			}
			got := render(t, res, diags)
			golden := strings.TrimSuffix(p, ".hcl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./site -run TestInvalidFixtures -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("diagnostics differ from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

func TestManyErrorsReportedAtOnce(t *testing.T) {
	_, diags := site.LoadFile("testdata/invalid-many-errors.hcl", site.Options{})
	var got []string
	for _, d := range diags {
		got = append(got, d.Summary)
	}
	want := []string{"Invalid MAC address", "Duplicate MAC address", "IP address inside the dynamic pool", "Unknown image"}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("missing diagnostic %q in %q", w, got)
		}
	}
}

func TestVariables(t *testing.T) {
	const src = `
site "t" {}
variable "nodes" {
  type    = number
  default = 2
}
variable "racks" {
  type    = list(string)
  default = ["r1"]
}
variable "pw" {
  sensitive = true
}
network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
}
machine "m" {
  count = var.nodes * length(var.racks)
  mac   = format("52:54:00:00:00:%02x", count.index + 1)
  bmc {
    address  = "192.0.2.100"
    username = "u"
    password = var.pw
  }
}
`
	dir := t.TempDir()
	varFile := filepath.Join(dir, "prod.vars")
	if err := os.WriteFile(varFile, []byte("racks = [\"r1\", \"r2\", \"r3\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		opts     site.Options
		machines int
		password string
		wantErr  string
	}{
		"env and defaults": {
			opts: site.Options{Env: []string{"METAL_VAR_pw=s3cret"}}, machines: 2, password: "s3cret",
		},
		"var overrides env": {
			opts:     site.Options{Env: []string{"METAL_VAR_pw=a"}, Vars: []string{"pw=b", "nodes=3"}},
			machines: 3, password: "b",
		},
		"var file": {
			opts:     site.Options{Env: []string{"METAL_VAR_pw=a"}, VarFiles: []string{varFile}},
			machines: 6, password: "a",
		},
		"list from -var": {
			opts:     site.Options{Vars: []string{"pw=a", `racks=["x","y"]`}},
			machines: 4, password: "a",
		},
		"missing sensitive variable": {
			opts: site.Options{}, wantErr: "METAL_VAR_pw",
		},
		"undeclared -var": {
			opts: site.Options{Vars: []string{"pw=a", "nope=1"}}, wantErr: "declares no variable",
		},
		"wrong type": {
			opts: site.Options{Vars: []string{"pw=a", "nodes=many"}}, wantErr: "not a number",
		},
		"malformed -var": {
			opts: site.Options{Vars: []string{"pw"}}, wantErr: "NAME=VALUE",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res, diags := site.Load("site.hcl", []byte(src), tc.opts)
			if tc.wantErr != "" {
				if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, diags)
				}
				return
			}
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if got := len(res.Site.Machines); got != tc.machines {
				t.Errorf("machines = %d, want %d", got, tc.machines)
			}
			if got := res.Site.Machines[0].BMC.Password; got != tc.password {
				t.Errorf("password = %q, want %q", got, tc.password)
			}
			if !res.Site.Variables["pw"].Sensitive {
				t.Error("pw not marked sensitive")
			}
		})
	}
}

// A sensitive value must not leak through diagnostics, even when it is
// the value that is wrong.
func TestSensitiveValueNotInDiagnostics(t *testing.T) {
	const src = `
site "t" {}
variable "pw" {
  type      = number
  sensitive = true
}
`
	_, diags := site.Load("site.hcl", []byte(src), site.Options{Env: []string{"METAL_VAR_pw=hunter2-secret"}})
	if !diags.HasErrors() {
		t.Fatal("want a type error")
	}
	if strings.Contains(diags.Error(), "hunter2") {
		t.Fatalf("diagnostics leak the secret: %v", diags)
	}
}

func TestMachineExpansion(t *testing.T) {
	res, diags := site.LoadFile("../hcl-examples/colo.hcl", site.Options{Vars: []string{"nodes_per_rack=10"}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	s := res.Site
	if got := len(s.Machines); got != 4*10+4*2 {
		t.Fatalf("machines = %d", got)
	}
	var n01 *site.Machine
	for _, m := range s.Machines {
		if m.Name == "r02-n01" {
			n01 = m
		}
	}
	if n01 == nil {
		t.Fatal("no machine r02-n01")
	}
	got := map[string]string{
		"mac": n01.MAC.String(), "ip": n01.IP.String(), "network": n01.Network,
		"rack": n01.Labels["rack"], "image": n01.Image, "bmc": n01.BMC.Address,
		"switch_port": n01.SwitchPort.Relay.String() + " " + n01.SwitchPort.CircuitID,
	}
	want := map[string]string{
		"mac": "b8:59:9f:02:00:01", "ip": "10.20.2.11", "network": "r02",
		"rack": "r02", "image": "debian-12", "bmc": "https://10.21.2.11",
		"switch_port": "10.20.2.1 Ethernet1/1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("r02-n01 (-want +got):\n%s", diff)
	}
	if s.Rollout.By != "rack" || s.Rollout.BatchPercent != 25 || s.Rollout.Canary != 2 {
		t.Errorf("rollout = %+v", s.Rollout)
	}
}

func TestFileTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.hcl")
	if err := os.WriteFile(p, bytes.Repeat([]byte("# padding\n"), 200), 0o644); err != nil {
		t.Fatal(err)
	}
	_, diags := site.LoadFile(p, site.Options{Limits: site.Limits{MaxFileBytes: 1000, MaxMachines: 10}})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "larger than 1000 bytes") {
		t.Fatalf("got %v", diags)
	}
}

// TestBootPath: a machine's boot path from boot, or from secure_boot
// alone (Secure Boot on means the signed chain); secure_boot unset is
// left to the BMC (nil).
func TestBootPath(t *testing.T) {
	on, off := true, false
	for name, tc := range map[string]struct {
		attrs, want string
		secure      *bool
	}{
		"default":           {attrs: ``, want: site.BootIPXE},
		"boot":              {attrs: `boot = "http"`, want: site.BootHTTP},
		"secure_boot":       {attrs: `secure_boot = true`, want: site.BootSecure, secure: &on},
		"secure_boot off":   {attrs: `secure_boot = false`, want: site.BootIPXE, secure: &off},
		"both, agreeing":    {attrs: "secure_boot = true\n  boot = \"secureboot\"", want: site.BootSecure, secure: &on},
		"boot = secureboot": {attrs: `boot = "secureboot"`, want: site.BootSecure},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "site.hcl")
			src := "site \"t\" {}\nnetwork \"lan\" {\n  subnet = \"192.0.2.0/24\"\n  mode = \"off\"\n}\n" +
				"machine \"a\" {\n  mac = \"52:54:00:00:00:01\"\n  " + tc.attrs + "\n}\n"
			if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			res, diags := site.LoadFile(p, site.Options{})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if got := res.Site.Machines[0].Boot; got != tc.want {
				t.Errorf("boot = %q, want %q", got, tc.want)
			}
			if diff := cmp.Diff(tc.secure, res.Site.Machines[0].SecureBoot); diff != "" {
				t.Errorf("secure_boot (-want +got):\n%s", diff)
			}
		})
	}
}
