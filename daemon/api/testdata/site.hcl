# The site the API and console tests serve: three machines in two racks.
site "testlab" {
  state = "file://.metal/testlab.db" # tests use their own store
}

variable "bmc_password" {
  sensitive = true
  default   = "lab-secret"
}

network "lab" {
  interface = "lo"
  subnet    = "192.0.2.0/24"
  gateway   = "192.0.2.1"
  pool      = "192.0.2.200-192.0.2.250"
}

image "debian-12" {
  disk    = "file:///var/lib/metal/images/debian-12.raw"
  cmdline = "console=ttyS0"
}

machine "web-01" {
  mac    = "52:54:00:00:02:01"
  ip     = "192.0.2.11"
  image  = image.debian-12
  labels = { rack = "r01", role = "web" }
  bmc {
    protocol = "redfish"
    address  = "http://127.0.0.1:1"
    username = "admin"
    password = var.bmc_password
  }
}

machine "web-02" {
  mac    = "52:54:00:00:02:02"
  ip     = "192.0.2.12"
  image  = image.debian-12
  labels = { rack = "r01", role = "web" }
  bmc {
    protocol = "redfish"
    address  = "http://127.0.0.1:1"
    username = "admin"
    password = var.bmc_password
  }
}

machine "db-01" {
  mac    = "52:54:00:00:03:01"
  ip     = "192.0.2.21"
  image  = image.debian-12
  labels = { rack = "r02", role = "db" }
  bmc {
    protocol = "ipmi"
    address  = "127.0.0.1:1"
    username = "admin"
    password = var.bmc_password
  }
}
