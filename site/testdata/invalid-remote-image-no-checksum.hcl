site "t" {}

image "os" {
  disk = "https://mirror.example/os.raw.zst"
}
