site "t" {}

variable "nodes" {
  type    = number
  default = 500
  validation {
    condition     = var.nodes <= 200
    error_message = "At most 200 nodes per rack."
  }
}
