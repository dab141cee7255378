terraform {
  # optional() object attributes and lifecycle preconditions need >= 1.3; 1.5 is the oldest tested here.
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.47 has every Cloud Run GPU field used here (node_selector, gpu_zonal_redundancy_disabled,
      # multi-container depends_on); ~> keeps to 6.x so a major upgrade is a deliberate change.
      version = "~> 6.47"
    }
  }
}
