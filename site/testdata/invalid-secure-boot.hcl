site "t" {}

network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
  gateway   = "192.0.2.1"
  pool      = "192.0.2.200-192.0.2.250"
}

machine "a" {
  mac         = "52:54:00:00:00:01"
  boot        = "ipxe"
  secure_boot = true
}
