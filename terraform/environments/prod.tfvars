# prod: one L4 instance always warm (no cold start for users), scaling out under load. GPU zonal
# redundancy stays off: cheaper GPU-seconds for best-effort capacity; turn it on if a zone outage
# must not reduce capacity (needs the zonal-redundant GPU quota).
#   terraform init -backend-config=prod.backend.hcl -backend-config="bucket=<state-bucket>"
#   terraform apply -var-file=prod.tfvars -var-file=prod.site.tfvars
environment                       = "prod"
name                              = "qwen3-tts"
deletion_protection               = true
noncurrent_version_retention_days = 30

cloud_run_service = {
  min_instances      = 1
  max_instances      = 4
  concurrency        = 16
  max_active_streams = 32
  triton_resources   = { cpu = 6, memory_gib = 28 }
  gateway_resources  = { cpu = 2, memory_gib = 4 }
}

# With runtimes gke: L4 and H100 pools (k8s/overlays/l4, k8s/overlays/h100), one warm L4 node.
gke_node_pools = {
  gpu_pools = {
    l4 = { machine_type = "g2-standard-8", accelerator = "nvidia-l4", min_nodes = 1, max_nodes = 8 }
    # a3-highgpu-1g is sold as Spot or flex-start capacity only.
    h100 = { machine_type = "a3-highgpu-1g", accelerator = "nvidia-h100-80gb", min_nodes = 0, max_nodes = 4, spot = true }
  }
  system_pool = { min_nodes = 2, max_nodes = 6 }
}

# The shared voice library with a standby in a second zone.
voice_db_instance = {
  high_availability     = true
  backup_retention_days = 14
}
