# Weights bucket and the runtime identity. The service itself is in service.tf. With cloud_run_enabled
# false only the bucket is made (GKE reads it: modules/qwen3-tts-gke).

locals {
  bucket_location = coalesce(var.bucket_location, var.region)
  weights_url     = "gs://${google_storage_bucket.weights.name}/${var.weights_prefix}"
  labels          = merge({ app = "qwen3-tts", managed-by = "terraform" }, var.labels)
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(concat(["storage.googleapis.com", "iam.googleapis.com"], var.cloud_run_enabled ? ["run.googleapis.com"] : [])) : toset([])

  project = var.project_id
  service = each.value
  # Other workloads in the project may use these APIs: never switch them off on destroy.
  disable_on_destroy = false
}

resource "google_storage_bucket" "weights" {
  # checkov:skip=CKV_GCP_62:Access logs would need a second bucket; Cloud Audit Logs (Data Access) cover object reads.
  project  = var.project_id
  name     = var.bucket_name
  location = local.bucket_location
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection

  # A bad upload of weights can be rolled back to the previous object generation.
  versioning {
    enabled = true
  }

  # ... but old generations of multi-GB files are not kept forever.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# The identity of the running revision. It can read the weights bucket and nothing else: no project-level
# role at all (Cloud Run writes stdout/stderr logs and platform metrics without one).
resource "google_service_account" "runtime" {
  count = var.cloud_run_enabled ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-run"
  display_name = "Qwen3-TTS Cloud Run runtime (${var.name})"

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "runtime_reads_weights" {
  count = var.cloud_run_enabled ? 1 : 0

  bucket = google_storage_bucket.weights.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.runtime[0].email}"
}
