terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.47"
    }
    # The database user's password (kept in the state and in Secret Manager, never in a file).
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
