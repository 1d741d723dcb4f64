site "t" {}

network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
  gateway   = "198.51.100.1"
}
