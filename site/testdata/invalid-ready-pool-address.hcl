site "t" {}

network "n" {
  interface = "eth0"
  subnet    = "10.0.0.0/24"
  pool      = "10.0.0.100-10.0.0.199"
}

image "os" {
  disk          = "os.raw"
  ready         = "tcp:22"
  ready_timeout = "5m"
}

machine "m1" {
  mac     = "52:54:00:00:00:01"
  network = network.n
  image   = image.os
}
