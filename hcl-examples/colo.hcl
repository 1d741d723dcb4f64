# A routed colo cage: four racks of 60 compute nodes and two storage nodes
# each, 248 machines from two blocks. Each rack is its own /24 behind its
# top-of-rack switch, which relays DHCP to metal on the provisioning
# network. Addresses, MACs, switch ports and BMC addresses follow the rack
# and slot, so adding a rack is one line in local.racks and one network.

site "ams1" {
  state  = "file:///var/lib/metal/ams1.db"
  listen = "10.20.0.2:8080"
  # Another team's servers share the provisioning VLAN: stay silent to them.
  unknown_machines = "ignore"
}

variable "bmc_password" {
  sensitive = true
  default   = "changeme"
}

variable "nodes_per_rack" {
  type    = number
  default = 60
  validation {
    condition     = var.nodes_per_rack > 0 && var.nodes_per_rack <= 200
    error_message = "nodes_per_rack must be between 1 and 200."
  }
}

locals {
  racks = {
    r01 = 1
    r02 = 2
    r03 = 3
    r04 = 4
  }
  # One entry per compute node: "r01-n01" => { rack, rack_index, slot }.
  compute = merge([
    for rack, ri in local.racks : {
      for slot in range(1, var.nodes_per_rack + 1) :
      format("%s-n%02d", rack, slot) => { rack = rack, ri = ri, slot = slot }
    }
  ]...)
  storage = merge([
    for rack, ri in local.racks : {
      for slot in range(1, 3) :
      format("%s-s%02d", rack, slot) => { rack = rack, ri = ri, slot = slot }
    }
  ]...)
}

# The provisioning network on the server's own link (bond0.100, where
# metal has 10.20.0.2): the top-of-rack switches' uplinks, the DNS and NTP
# servers, and any machine patched straight into it.
network "prov" {
  interface  = "bond0.100"
  subnet     = "10.20.0.0/24"
  gateway    = "10.20.0.1"
  dns        = ["10.20.0.53", "10.20.0.54"]
  domain     = "ams1.example.net"
  lease_time = "24h"
}

# One routed /24 per rack behind its top-of-rack switch, which relays DHCP
# to 10.20.0.2 (ip helper-address) from its own address in the rack: the
# rack's gateway and its relay agent. metal needs no address in the racks,
# only a route back to the relays (metal doctor checks it); it answers a
# relayed request only from a declared relay. A relay that forwards from
# another address (its uplink, a loopback) lists that one too.
network "r01" {
  interface    = "bond0.100"
  subnet       = "10.20.1.0/24"
  gateway      = "10.20.1.1"
  dns          = ["10.20.0.53", "10.20.0.54"]
  domain       = "ams1.example.net"
  pool         = "10.20.1.100-10.20.1.199"
  lease_time   = "24h"
  relay_agents = ["10.20.1.1"]
  ntp          = ["10.20.0.123"]
  mtu          = 9000
}

network "r02" {
  interface    = "bond0.100"
  subnet       = "10.20.2.0/24"
  gateway      = "10.20.2.1"
  dns          = ["10.20.0.53", "10.20.0.54"]
  domain       = "ams1.example.net"
  pool         = "10.20.2.100-10.20.2.199"
  lease_time   = "24h"
  relay_agents = ["10.20.2.1"]
  ntp          = ["10.20.0.123"]
  mtu          = 9000
}

network "r03" {
  interface    = "bond0.100"
  subnet       = "10.20.3.0/24"
  gateway      = "10.20.3.1"
  dns          = ["10.20.0.53", "10.20.0.54"]
  domain       = "ams1.example.net"
  pool         = "10.20.3.100-10.20.3.199"
  lease_time   = "24h"
  relay_agents = ["10.20.3.1"]
  ntp          = ["10.20.0.123"]
  mtu          = 9000
}

network "r04" {
  interface    = "bond0.100"
  subnet       = "10.20.4.0/24"
  gateway      = "10.20.4.1"
  dns          = ["10.20.0.53", "10.20.0.54"]
  domain       = "ams1.example.net"
  pool         = "10.20.4.100-10.20.4.199"
  lease_time   = "24h"
  relay_agents = ["10.20.4.1"]
  ntp          = ["10.20.0.123"]
  mtu          = 9000
}

image "debian-12" {
  disk     = "https://mirror.ams1.example.net/images/debian-12-genericcloud-amd64-20260901.raw.zst"
  checksum = "sha256:0ae7b60ce39f26d183da1e9800ee49d55b15034ac38e96fab14609ea5d541199"
  cmdline  = "console=ttyS0,115200n8"
}

image "rescue" {
  kernel           = "https://mirror.ams1.example.net/rescue/vmlinuz"
  kernel_checksum  = "sha256:6996bd11c061f007111551b7cb44626b82dc797ad2d1afbe67e9f623b427c560"
  initrd           = ["https://mirror.ams1.example.net/rescue/initrd.img"]
  initrd_checksums = ["sha256:d0541a93319cca3322ac8e6a954cff4d77f1efaed177f770bdf6d554fc043b60"]
  cmdline          = "console=ttyS0,115200n8 rescue/enable=true"
}

machine "compute" {
  for_each = local.compute
  mac      = format("b8:59:9f:%02x:00:%02x", each.value.ri, each.value.slot)
  ip       = format("10.20.%d.%d", each.value.ri, 10 + each.value.slot)
  # Cabled by slot: node n is on port Ethernet1/n of its rack's switch,
  # and answered only through that port.
  switch_port = { relay = format("10.20.%d.1", each.value.ri), circuit_id = format("Ethernet1/%d", each.value.slot) }
  image       = image.debian-12
  disk        = "/dev/nvme0n1"
  labels      = { rack = each.value.rack, role = "compute" }
  bmc {
    protocol = "redfish"
    address  = format("https://10.21.%d.%d", each.value.ri, 10 + each.value.slot)
    username = "metal"
    password = var.bmc_password
    ca_file  = "/etc/metal/bmc-ca.pem"
  }
}

machine "storage" {
  for_each = local.storage
  mac      = format("b8:59:9f:%02x:01:%02x", each.value.ri, each.value.slot)
  ip       = format("10.20.%d.%d", each.value.ri, 200 + each.value.slot)
  image    = image.debian-12
  disk     = "/dev/sda"
  labels   = { rack = each.value.rack, role = "storage" }
  bmc {
    protocol = "ipmi"
    address  = format("10.21.%d.%d", each.value.ri, 200 + each.value.slot)
    username = "metal"
    password = var.bmc_password
  }
}

# One rack at a time; a canary first; stop at the second failure.
rollout {
  canary       = 2
  batch_size   = "25%"
  max_failures = 1
  by           = "rack"
  stagger      = "3s"
}
