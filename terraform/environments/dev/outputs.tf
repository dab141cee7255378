output "service_url" {
  description = "HTTPS URL of the gateway."
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
