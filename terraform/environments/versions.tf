terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    # The provider this root configures. random (the voice library's password) is pinned where it is
    # used, in modules/qwen3-tts-voice-db; terraform init installs it from that constraint.
    google = {
      source  = "hashicorp/google"
      version = "~> 6.47"
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
