site "t" {}

network "rack1" {
  interface    = "eth0"
  subnet       = "198.51.100.0/24"
  gateway      = "198.51.100.1"
  relay_agents = ["198.51.100.1"]
  mtu          = 9000
  routes       = { "10.30.0.0/16" = "192.0.2.9" }
  options      = { "tftp-server-address" = "tftp.example", "3" = "198.51.100.2" }
}
