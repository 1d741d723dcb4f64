site "t" {}

network "prov" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
}

network "rack1" {
  interface    = "eth0"
  subnet       = "198.51.100.0/24"
  gateway      = "198.51.100.1"
  relay_agents = ["198.51.100.1", "192.0.2.2"]
}

machine "a" {
  mac         = "52:54:00:00:00:01"
  ip          = "198.51.100.11"
  switch_port = { relay = "198.51.100.1", circuit_id = "Ethernet1/1" }
}

machine "b" {
  mac         = "52:54:00:00:00:02"
  ip          = "198.51.100.12"
  switch_port = { relay = "198.51.100.254", circuit_id = "Ethernet1/2" }
}

machine "c" {
  mac         = "52:54:00:00:00:03"
  ip          = "198.51.100.13"
  switch_port = { relay = "198.51.100.1", circuit_id = "Ethernet1/1" }
}
