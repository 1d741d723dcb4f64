site "t" {}

image "os" {
  disk     = "https://mirror.example/os.raw.zst"
  checksum = "md5:d41d8cd98f00b204e9800998ecf8427e"
}
