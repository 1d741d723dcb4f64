site "t" {}

network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
  pool      = "192.0.2.200-192.0.3.10"
}
