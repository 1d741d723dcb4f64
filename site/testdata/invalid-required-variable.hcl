site "t" {}

variable "bmc_password" {
  sensitive = true
}
