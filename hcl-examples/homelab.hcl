# A homelab rack: three machines on one network, two with Redfish BMCs and
# one older box with IPMI. Try:
#
#   METAL_VAR_bmc_password=secret metal plan hcl-examples/homelab.hcl

site "homelab" {
  state            = "file://.metal/homelab.db"
  listen           = ":8080"
  unknown_machines = "discover" # new boxes boot the discovery agent
}

variable "bmc_password" {
  description = "Password of the admin account on every BMC"
  sensitive   = true
  default     = "changeme" # set METAL_VAR_bmc_password for real hardware
}

variable "ssh_key" {
  description = "Public key installed for the default user"
  type        = string
  default     = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHomelabExampleKeyOnlyForDocs admin@laptop"
}

network "lan" {
  interface  = "eno1"
  subnet     = "192.168.50.0/24"
  gateway    = "192.168.50.1"
  dns        = ["192.168.50.1"]
  domain     = "lab.home.arpa"
  pool       = "192.168.50.200-192.168.50.250"
  lease_time = "12h"
}

# Imported once with `metal images import`; a local file needs no checksum.
image "debian-12" {
  disk    = "file:///var/lib/metal/images/debian-12-genericcloud-amd64.raw"
  cmdline = "console=ttyS0,115200"
}

locals {
  bmc_user = "admin"
}

machine "nas" {
  mac                 = "3c:ec:ef:10:00:01"
  ip                  = "192.168.50.10"
  image               = image.debian-12
  disk                = "/dev/nvme0n1"
  labels              = { role = "storage" }
  ssh_authorized_keys = [var.ssh_key]
  bmc {
    protocol     = "redfish"
    address      = "https://192.168.50.110"
    username     = local.bmc_user
    password     = var.bmc_password
    insecure_tls = true # self-signed certificate on this BMC
  }
}

machine "compute" {
  for_each            = { "compute-1" = 11, "compute-2" = 12 }
  mac                 = format("3c:ec:ef:10:00:%02x", each.value)
  ip                  = cidrhost(network.lan.subnet, each.value)
  image               = image.debian-12
  labels              = { role = "compute" }
  ssh_authorized_keys = [var.ssh_key]
  bmc {
    # compute-2 is an older board that only speaks IPMI.
    protocol     = each.key == "compute-2" ? "ipmi" : "redfish"
    address      = each.key == "compute-2" ? "192.168.50.112:623" : "https://192.168.50.111"
    username     = local.bmc_user
    password     = var.bmc_password
    insecure_tls = true
  }
}

rollout {
  canary       = 1
  batch_size   = 1
  max_failures = 0
}
