site "t" {}

network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
  gateway   = "192.0.2.1"
  pool      = "192.0.2.200-192.0.2.250"
}

machine "a" {
  mac = "52:54:00:00:00:01"
  firmware "BIOS" {
    version  = "1.17.0"
    image    = "firmware/bios-1.17.0.bin"
    checksum = "sha256:not-hex"
  }
  firmware "bios" {
    version  = "1.18.0"
    image    = "firmware/bios-1.18.0.bin"
    checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
  }
  bmc {
    protocol = "ipmi"
    address  = "192.0.2.100"
    username = "admin"
    password = "x"
  }
}
