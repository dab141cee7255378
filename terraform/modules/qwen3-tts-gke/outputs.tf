output "cluster_name" {
  description = "GKE cluster name (gcloud container clusters get-credentials NAME --region REGION)."
  value       = google_container_cluster.this.name
}

output "network_id" {
  description = "The cluster's VPC (Cloud SQL peers into it)."
  value       = google_compute_network.this.id
}

output "triton_service_account" {
  description = "Google service account of the Triton pods: the iam.gke.io/gcp-service-account annotation of qwen3-tts-triton."
  value       = google_service_account.triton.email
}

output "node_service_account" {
  description = "Service account of the nodes."
  value       = google_service_account.nodes.email
}

output "gpu_pools" {
  description = "GPU node pools and their accelerator (the k8s overlay to deploy on each)."
  value       = { for name, pool in var.gpu_pools : name => pool.accelerator }
}
