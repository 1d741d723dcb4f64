package site

import (
	"fmt"
	"strings"
)

// GenerateSite returns the HCL of a synthetic site with racks×perRack
// machines, each with a Redfish BMC, for benchmarks and load tests. Machines
// come from one for_each block, as an operator would write a large site.
func GenerateSite(racks, perRack int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `site "bench" {
  state = "file:///tmp/metal-bench.db"
}

variable "bmc_password" {
  sensitive = true
  default   = "bench"
}

network "prov" {
  interface = "eth0"
  subnet    = "10.0.0.0/8"
  gateway   = "10.0.0.1"
  pool      = "10.255.0.1-10.255.0.250"
}

image "os" {
  disk     = "https://mirror.example/os.raw.zst"
  checksum = "sha256:%s"
}

locals {
  machines = merge([
    for r in range(%d) : {
      for s in range(%d) : format("r%%03d-n%%03d", r, s) => { rack = r, slot = s }
    }
  ]...)
}

machine "node" {
  for_each = local.machines
  mac      = format("02:00:00:%%02x:%%02x:%%02x", floor(each.value.rack / 256), each.value.rack %% 256, each.value.slot)
  ip       = format("10.%%d.%%d.%%d", 1 + floor(each.value.rack / 256), each.value.rack %% 256, 1 + each.value.slot)
  image    = image.os
  labels   = { rack = format("r%%03d", each.value.rack) }
  bmc {
    address  = format("https://10.254.%%d.%%d", each.value.rack %% 256, 1 + each.value.slot)
    username = "metal"
    password = var.bmc_password
  }
}

rollout {
  canary     = 1
  batch_size = "10%%"
  by         = "rack"
}
`, strings.Repeat("ab", 32), racks, perRack)
	return []byte(b.String())
}
