# A disaster-recovery standby for the ams1 colo, in a second building. It
# replicates the primary's state over SFTP:
#
#   metal standby --site dr-standby.hcl --from sftp://metal@backup.example.net/ams1 --every 5m
#
# and takes over with `metal promote` once the primary is gone. Its machines
# are the spare rack it can provision on its own.

site "ams1-dr" {
  # Three metal servers share state in etcd; one leads BMC actions.
  state  = "etcd://10.30.0.11:2379,10.30.0.12:2379,10.30.0.13:2379/metal/ams1"
  listen = ":8080"
}

variable "bmc_password" {
  sensitive = true
  default   = "changeme"
}

network "dr" {
  interface = "eno2"
  subnet    = "10.30.0.0/22"
  gateway   = "10.30.0.1"
  dns       = ["10.30.0.1"]
  domain    = "dr.ams1.example.net"
  pool      = "10.30.3.1-10.30.3.200"
}

image "debian-12" {
  disk     = "sftp://images@10.30.0.20/srv/images/debian-12-genericcloud-amd64.raw.xz"
  checksum = "sha512:064dcaa79440518c6a8352bc7929c1b1e9e456166accc8dd3f5c9750cd7b6c1bc88a4bd387f6c7d095bb831d55c1d427830d0adfbc062c9f3a85cd5e5dd69bf4"
}

machine "spare" {
  count  = 8
  name   = format("spare-%02d", count.index + 1)
  mac    = format("0c:c4:7a:30:00:%02x", count.index + 1)
  ip     = cidrhost("10.30.1.0/24", 10 + count.index)
  image  = image.debian-12
  power  = count.index < 4 ? "on" : "off" # half the rack stays cold
  labels = { rack = count.index < 4 ? "dr-a" : "dr-b" }
  bmc {
    protocol = "auto"
    address  = cidrhost("10.30.2.0/24", 10 + count.index)
    username = "ADMIN"
    password = var.bmc_password
  }
}

# The primary metal's own host, by its BMC: metal promote powers it off
# through it, and confirms it is off, before this site serves, so an old
# primary cut off from the backup directory is stopped anyway.
fence {
  bmc {
    protocol = "ipmi"
    address  = "10.20.2.2"
    username = "ADMIN"
    password = var.bmc_password
  }
}

rollout {
  canary       = 1
  batch_size   = 2
  max_failures = 0
  by           = "rack"
}
