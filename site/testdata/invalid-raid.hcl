site "t" {}

network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
  gateway   = "192.0.2.1"
  pool      = "192.0.2.200-192.0.2.250"
}

machine "a" {
  mac = "52:54:00:00:00:01"
  raid "system" {
    level = "RAID1"
    count = 3
  }
  raid "data" {
    level  = "RAID6"
    drives = ["2", "3"]
  }
  raid "scratch" {
    level  = "RAID0"
    drives = ["3"]
    count  = 1
  }
  raid "logs" {
    level = "RAID0"
    count = 1
    size  = "lots"
  }
  bmc {
    address  = "http://192.0.2.100"
    username = "admin"
    password = "x"
  }
}
