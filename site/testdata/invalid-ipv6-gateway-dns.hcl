site "t" {}

network "v4" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
  gateway6  = "2001:db8:0:1::1"
  dns6      = ["2001:db8:0:1::53"]
}

network "v6" {
  interface = "eth1"
  subnet6   = "2001:db8:0:1::/64"
  gateway6  = "2001:db8:0:2::1"
  dns6      = ["198.51.100.53", "2001:db8::53"]
}

network "anycast" {
  interface = "eth2"
  subnet6   = "2001:db8:0:3::/64"
  gateway6  = "2001:db8:0:3::"
}

network "mistyped" {
  interface = "eth3"
  subnet6   = "2001:db8:0:4::/64"
  gateway6  = "203.0.113.1"
}

network "routed" {
  interface = "eth5"
  subnet6   = "2001:db8:0:6::/64"
  gateway6  = "2001:db8:0:6::1"
}

machine "a" {
  mac     = "52:54:00:00:00:01"
  network = network.routed
  ip6     = "2001:db8:0:6::1"
}

network "linklocal" {
  interface = "eth4"
  subnet6   = "2001:db8:0:5::/64"
  gateway6  = "fe80::1"
  dns6      = ["2001:db8::53"]
}

machine "b" {
  mac     = "52:54:00:00:00:02"
  network = network.linklocal
  ip6     = "2001:db8:0:5::1"
}
