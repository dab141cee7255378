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

  # State in a GCS bucket created once by hand (it cannot manage itself):
  #   terraform init -backend-config="bucket=<state-bucket>"
  backend "gcs" {
    prefix = "qwen3-tts/prod"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
