site "t" {}

network "lan" {
  subnet = "192.0.2.0/24"
