site "t" {}

network "lan" {
  interface = "eth0"
  subnet    = "192.0.2.0/24"
  gateway   = "192.0.2.1"
  pool      = "192.0.2.200-192.0.2.250"
}

image "os" {
  disk = "file:///images/os.raw"
}

machine "web" {
  count = 100001
  mac   = format("52:54:00:%02x:%02x:%02x", floor(count.index / 65536), floor(count.index / 256) % 256, count.index % 256)
}
