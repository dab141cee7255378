output "service_url" {
  description = "HTTPS URL of the gateway on Cloud Run (null without runtimes cloud_run)."
  value       = module.qwen3_tts.service_url
}

output "weights_url" {
  description = "Upload the checkpoints here (gsutil -m rsync -r ./checkpoints <weights_url>)."
  value       = module.qwen3_tts.weights_url
}

output "runtime_service_account" {
  description = "Runtime service account of the service."
  value       = module.qwen3_tts.runtime_service_account
}

output "gke_cluster_name" {
  description = "GKE cluster (runtimes gke): gcloud container clusters get-credentials NAME --region REGION."
  value       = one(module.gke[*].cluster_name)
}

output "triton_service_account" {
  description = "Google service account of the Triton pods: the site overlay's iam.gke.io/gcp-service-account annotation."
  value       = one(module.gke[*].triton_service_account)
}

output "voice_db_url_secret" {
  description = "Secret Manager secret with QWEN3_TTS_VOICE_DB_URL, to copy into the Kubernetes Secret qwen3-tts (k8s/README.md)."
  value       = one(module.voice_db[*].voice_db_url_secret)
}
