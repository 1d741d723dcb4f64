site "t" {}

network "v6" {
  interface = "eth0"
  subnet6   = "2001:db8:0:1::/64"
  gateway   = "192.0.2.1"
}

network "none" {
  interface = "eth1"
}

machine "a" {
  mac = "52:54:00:00:00:01"
  ip6 = "2001:db8:0:1::10"
}

machine "b" {
  mac     = "52:54:00:00:00:02"
  network = network.v6
  ip      = "192.0.2.11"
}
