output "service_url" {
  description = "HTTPS URL of the gateway (the service's ingress container)."
  value       = google_cloud_run_v2_service.this.uri
}

output "service_name" {
  description = "Cloud Run service name."
  value       = google_cloud_run_v2_service.this.name
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
  description = "Email of the runtime service account (objectViewer on the weights bucket only)."
  value       = google_service_account.runtime.email
}
