output "instance_connection_name" {
  description = "PROJECT:REGION:INSTANCE, for the Cloud SQL Auth Proxy or gcloud sql connect."
  value       = google_sql_database_instance.this.connection_name
}

output "private_ip" {
  description = "The instance's address in the VPC."
  value       = google_sql_database_instance.this.private_ip_address
}

output "voice_db_url_secret" {
  description = "Secret Manager secret holding QWEN3_TTS_VOICE_DB_URL (gcloud secrets versions access latest --secret ...)."
  value       = google_secret_manager_secret.voice_db_url.secret_id
}
