site "t" {}

network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.7/24"
}
