terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.47"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State in a GCS bucket created once by hand (it cannot manage itself), one prefix per environment
  # (<env>.backend.hcl):
  #   terraform init -backend-config=dev.backend.hcl -backend-config="bucket=<state-bucket>"
  # Switching a working copy to another environment: the same with prod.backend.hcl and -reconfigure.
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}
