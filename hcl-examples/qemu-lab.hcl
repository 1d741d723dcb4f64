# The QEMU lab: two virtual machines inside a network namespace, one booting
# with BIOS and one with UEFI, each behind a virtual BMC. `metal lab up`
# writes a site like this one for the lab it creates.

site "qemu-lab" {
  state  = "file://lab/state.db"
  listen = "192.0.2.1:8080"
}

variable "bmc_password" {
  sensitive = true
  default   = "lab-password"
}

network "lab" {
  interface  = "mtl-br0"
  subnet     = "192.0.2.0/24"
  gateway    = "192.0.2.1"
  dns        = ["192.0.2.1"]
  domain     = "lab.test"
  pool       = "192.0.2.200-192.0.2.240"
  lease_time = "1h"
}

# Built by `metal images build-agent`; served from metal's own cache.
image "lab-os" {
  disk    = "file://lab/images/lab-os.raw"
  cmdline = "console=ttyS0"
}

machine "vm" {
  for_each = {
    vm-bios = { n = 1, firmware = "bios" }
    vm-uefi = { n = 2, firmware = "uefi" }
  }
  mac    = format("52:54:00:00:02:%02x", each.value.n)
  ip     = cidrhost("192.0.2.0/24", 10 + each.value.n)
  image  = image.lab-os
  disk   = "/dev/vda"
  labels = { firmware = each.value.firmware }
  bmc {
    protocol = "redfish"
    address  = format("http://127.0.0.1:%d", 8000 + each.value.n)
    username = "admin"
    password = var.bmc_password
  }
}

rollout {
  canary     = 1
  batch_size = 1
  stagger    = "0s"
}
