site "dr" {}

network "lab" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
}

fence {
  bmc {
    protocol = "snmp"
    address  = "192.0.2.2"
  }
}
