terraform {
  # optional() object attributes with defaults need >= 1.3; 1.5 is the oldest tested here.
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # The same major as the Cloud Run module: gpu_driver_installation_config, Dataplane V2 and Workload
      # Identity are all in 6.x.
      version = "~> 6.47"
    }
  }
}
