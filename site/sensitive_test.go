package site_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/site"
)

const sensitiveBase = `
site "t" {}
variable "secret" { sensitive = true }
variable "tags" {
  type      = map(string)
  sensitive = true
}
network "n" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
}
image "os" {
  kernel   = "https://metal:${var.secret}@images.example/vmlinuz"
  kernel_checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
  initrd   = ["http://plain.example/initrd"]
  initrd_checksums = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
  cmdline  = "console=ttyS0 api_key=${var.secret}"
}
`

// TestSensitiveFlows: a value computed from a sensitive variable is marked
// on the attribute it reaches, where metal can hide it; where it cannot,
// loading fails with a diagnostic that names the attribute and why, and
// never the value.
func TestSensitiveFlows(t *testing.T) {
	t.Parallel()
	const secret = "Zq9-sensitive-771"
	env := []string{"METAL_VAR_secret=" + secret, `METAL_VAR_tags={ team = "` + secret + `" }`}
	src := sensitiveBase + `
machine "m1" {
  mac    = "02:00:00:00:00:01"
  ip     = "192.0.2.11"
  image  = image.os
  labels = { owner = "ops-${var.secret}", rack = "r1", zone = "a" }
  user_data = "#cloud-config\npassword: ${var.secret}"
  bmc {
    address  = "https://192.0.2.200"
    username = upper(var.secret)
    password = var.secret
  }
}
machine "m2" {
  mac    = "02:00:00:00:00:02"
  ip     = "192.0.2.12"
  labels = var.tags
}
`
	res, diags := site.Load("site.hcl", []byte(src), site.Options{Env: env})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	want := map[string]map[string]bool{
		"m1": {"labels.owner": true, "user_data": true, "bmc.username": true, "bmc.password": true},
		"m2": {"labels.team": true},
	}
	for _, m := range res.Site.Machines {
		if diff := cmp.Diff(want[m.Name], m.Sensitive); diff != "" {
			t.Errorf("%s sensitive attributes (-want +got):\n%s", m.Name, diff)
		}
	}
	im := res.Site.Image("os")
	if !im.Kernel.Sensitive || !im.CmdlineSensitive || im.Initrd[0].Sensitive {
		t.Errorf("image: kernel sensitive %v, cmdline %v, initrd %v; want true, true, false", im.Kernel.Sensitive, im.CmdlineSensitive, im.Initrd[0].Sensitive)
	}

	tests := map[string]struct{ machine, want string }{
		"mac": {`mac = "02:00:00:00:00:0${var.secret != "" ? 1 : 2}"
  ip = "192.0.2.11"`, `"mac" is computed from a sensitive variable`},
		"ip": {`mac = "02:00:00:00:00:01"
  ip = var.secret != "" ? "192.0.2.11" : "192.0.2.12"`, `"ip" is computed from a sensitive variable`},
		"hostname": {`mac = "02:00:00:00:00:01"
  hostname = "h-${var.secret}"`, `"hostname" is computed from a sensitive variable`},
		"rack label": {`mac = "02:00:00:00:00:01"
  labels = { rack = var.secret }`, `label "rack" is computed from a sensitive variable`},
		"bmc address": {`mac = "02:00:00:00:00:01"
  bmc {
    address = "https://${var.secret}"
    username = "u"
    password = var.secret
  }`, `"address" is computed from a sensitive variable`},
		"for_each": {`for_each = { a = var.secret }
  mac = "02:00:00:00:00:01"`, `for_each is computed from a sensitive variable`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			src := sensitiveBase + "machine \"m\" {\n  " + tc.machine + "\n}\n"
			_, diags := site.Load("site.hcl", []byte(src), site.Options{Env: env})
			if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
				t.Fatalf("diagnostics %v; want one saying %s", diags, tc.want)
			}
			if !strings.Contains(diags.Error(), "Sensitive value cannot be hidden") {
				t.Errorf("diagnostic lacks its summary: %v", diags)
			}
			if strings.Contains(diags.Error(), secret) {
				t.Errorf("the diagnostic shows the secret: %v", diags)
			}
		})
	}

	// The rollout's by label picks batches: it cannot be hidden either.
	bySrc := sensitiveBase + `
rollout { by = "zone" }
machine "m" {
  mac = "02:00:00:00:00:01"
  labels = { zone = var.secret }
}
`
	if _, diags := site.Load("site.hcl", []byte(bySrc), site.Options{Env: env}); !strings.Contains(diags.Error(), `label "zone" is computed from a sensitive variable`) {
		t.Errorf("sensitive by label: %v", diags)
	}
}
