network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
}
