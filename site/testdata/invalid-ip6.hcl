site "t" {}

network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
  subnet6   = "2001:db8:0:1::/64"
}

network "old" {
  interface = "eth1"
  subnet    = "198.51.100.0/24"
}

machine "a" {
  mac     = "52:54:00:00:00:01"
  network = network.lan
  ip6     = "2001:db8:0:2::10"
}

machine "b" {
  mac     = "52:54:00:00:00:02"
  network = network.old
  ip6     = "2001:db8:0:1::11"
}
