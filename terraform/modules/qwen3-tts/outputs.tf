output "service_url" {
  description = "HTTPS URL of the gateway (the service's ingress container); null without Cloud Run."
  value       = one(google_cloud_run_v2_service.this[*].uri)
}

output "service_name" {
  description = "Cloud Run service name; null without Cloud Run."
  value       = one(google_cloud_run_v2_service.this[*].name)
}

output "weights_bucket" {
  description = "Bucket to upload the checkpoints to (under weights_url)."
  value       = google_storage_bucket.weights.name
}

output "weights_url" {
  description = "gs:// URL the Triton container syncs at start (QWEN3_TTS_GCS_MODEL_BUCKET)."
  value       = local.weights_url
}

output "runtime_service_account" {
  description = "Email of the Cloud Run runtime service account (objectViewer on the weights bucket only); null without Cloud Run."
  value       = one(google_service_account.runtime[*].email)
}
