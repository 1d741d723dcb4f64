site "t" {}

image "os" {
  disk  = "os.raw"
  ready = "http://db1:8080/healthz"
}
