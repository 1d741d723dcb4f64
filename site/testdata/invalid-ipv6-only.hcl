site "t" {}

network "v6" {
  interface = "eth0"
  subnet6   = "2001:db8:0:1::/64"
  gateway   = "192.0.2.1"
}

network "none" {
  interface = "eth1"
}

# Behind DHCPv6 relays: fine.
network "rack6" {
  subnet6      = "2001:db8:0:2::/64"
  relay_agents = ["2001:db8:0:1::2"]
}

network "rack6v4" {
  subnet6      = "2001:db8:0:3::/64"
  relay_agents = ["192.0.2.9"]
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
