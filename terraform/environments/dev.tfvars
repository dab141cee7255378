# dev/staging: the cheapest way to have the real stack on a real L4. Scales to zero (pay only while
# someone is testing; the first request waits for a cold start) and never runs more than one GPU.
#   terraform init -backend-config=dev.backend.hcl -backend-config="bucket=<state-bucket>"
#   terraform apply -var-file=dev.tfvars -var-file=dev.site.tfvars
environment = "dev"
name        = "qwen3-tts-dev"
# Throwaway environment: destroy must work without a manual step.
deletion_protection               = false
noncurrent_version_retention_days = 7

cloud_run_service = {
  min_instances      = 0
  max_instances      = 1
  concurrency        = 8
  max_active_streams = 16
  triton_resources   = { cpu = 4, memory_gib = 24 }
  gateway_resources  = { cpu = 1, memory_gib = 2 }
}

# With runtimes gke: one L4 pool that scales to zero (overlays/l4 + a site overlay, k8s/README.md).
gke_node_pools = {
  gpu_pools = {
    l4 = { machine_type = "g2-standard-8", accelerator = "nvidia-l4", min_nodes = 0, max_nodes = 1, spot = true }
  }
  system_pool = { min_nodes = 1, max_nodes = 2 }
}

voice_db_instance = {
  high_availability     = false
  backup_retention_days = 3
}
