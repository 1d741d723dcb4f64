# /etc/metal/site.hcl: the site metal.service serves. An example: edit the
# network below to the boot network of your machines (or write a new file
# with `metal init --interface NAME --scan -o /etc/metal/site.hcl --force`),
# check it, then start the service:
#
#   metal validate /etc/metal/site.hcl
#   metal plan /etc/metal/site.hcl
#   systemctl enable --now metal
#
# Secrets (METAL_VAR_bmc_password=...) go in /etc/default/metal, not here.
# After an edit, `systemctl reload metal` serves the new file (a change of
# networks, listen or state needs `systemctl restart metal`).
# man metal, and the examples in /usr/share/doc/metal/examples, say what
# else a site file can hold.

# state is the state store: one embedded file, or etcd for several metal
# servers ("etcd://10.0.0.5:2379,10.0.0.6:2379/metal"). listen is where
# machines fetch iPXE scripts, kernels and images (and where the console,
# API and /metrics answer, unless metal serve --api-listen moves them).
# Machines not in this file get a pool address and nothing to boot;
# unknown_machines = "discover" boots metal's agent on them, which reports
# their hardware (MACs included) to metal machines.
site "example" {
  state  = "file:///var/lib/metal/state.db"
  listen = "192.0.2.1:8080"
  # unknown_machines = "discover"
}

# The boot network. pool holds the addresses of machines not declared
# below; mode "proxy" answers only PXE clients, beside another DHCP server.
network "boot" {
  interface = "eno1"
  subnet    = "192.0.2.0/24"
  gateway   = "192.0.2.1"
  dns       = ["192.0.2.1"]
  pool      = "192.0.2.192-192.0.2.254"
  mode      = "dhcp"
}

# An image to install. kernel/initrd boot an installer; disk is written
# by metal's agent (http, https, file or sftp; .zst and .xz decompressed).
# image "debian-12" {
#   disk     = "https://images.example/debian-12.raw.zst"
#   checksum = "sha256:..."
#   cmdline  = "console=ttyS0"
# }

# A machine, with its BMC:
# variable "bmc_password" {
#   sensitive = true
# }
#
# machine "web-01" {
#   mac   = "52:54:00:00:01:01"
#   ip    = "192.0.2.10"
#   image = image.debian-12
#   power = "on"
#   bmc {
#     protocol = "redfish"                # or "ipmi"
#     address  = "https://10.0.1.1"
#     username = "admin"
#     password = var.bmc_password        # METAL_VAR_bmc_password
#   }
# }

# How a change rolls out: one machine alone first, then batches; the
# rollout halts at the first failure.
rollout {
  canary       = 1
  batch_size   = 5
  max_failures = 0
}
