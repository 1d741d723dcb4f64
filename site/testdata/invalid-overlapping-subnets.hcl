site "t" {}

network "a" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
}

network "b" {
  interface = "eth0"
  subnet    = "192.0.2.128/25"
}
