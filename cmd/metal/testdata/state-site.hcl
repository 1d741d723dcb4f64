# A small site whose state store is beside it, for the state verbs' tests
# (machines, events, backup, restore, standby, promote).
site "ams1" {
  state = "file://state.db"
}

network "prov" {
  interface = "lo"
  subnet    = "192.0.2.0/24"
  gateway   = "192.0.2.1"
  pool      = "192.0.2.200-192.0.2.240"
}

image "debian-12" {
  disk = "file://debian-12.raw"
}

machine "web-01" {
  mac   = "52:54:00:00:01:01"
  ip    = "192.0.2.11"
  image = image.debian-12
}
