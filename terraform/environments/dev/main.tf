# dev/staging: the cheapest way to have the real stack on a real L4. Scales to zero (pay only while
# someone is testing; the first request waits for a cold start) and never runs more than one GPU.
locals {
  cloud_run = contains(var.runtimes, "cloud_run")
  gke       = contains(var.runtimes, "gke")
}

# The weights bucket always; the Cloud Run service when runtimes has "cloud_run".
module "qwen3_tts" {
  source = "../../modules/qwen3-tts"

  cloud_run_enabled = local.cloud_run

  project_id    = var.project_id
  region        = var.region
  name          = "qwen3-tts-dev"
  gateway_image = var.gateway_image
  triton_image  = var.triton_image
  bucket_name   = var.bucket_name

  min_instances                 = 0
  max_instances                 = 1
  concurrency                   = 8
  gpu_zonal_redundancy_disabled = true
  triton_resources              = { cpu = 4, memory_gib = 24 }
  gateway_resources             = { cpu = 1, memory_gib = 2 }

  env = merge({ QWEN3_TTS_MAX_ACTIVE_STREAMS = "16" }, var.env)

  invoker_members                   = var.invoker_members
  noncurrent_version_retention_days = 7
  # Throwaway environment: destroy must work without a manual step.
  deletion_protection = false
  labels              = { env = "dev" }
}

# GKE beside (or instead of) Cloud Run: a cluster with one L4 pool that scales to zero, and the shared
# voice library. The workloads come from k8s/ (overlays/l4 + a site overlay, k8s/README.md).
module "gke" {
  source = "../../modules/qwen3-tts-gke"
  count  = local.gke ? 1 : 0

  project_id     = var.project_id
  region         = var.region
  zones          = var.gke_zones
  name           = "qwen3-tts-dev"
  weights_bucket = module.qwen3_tts.weights_bucket
  images         = [var.gateway_image, var.triton_image]

  gpu_pools = {
    l4 = { machine_type = "g2-standard-8", accelerator = "nvidia-l4", min_nodes = 0, max_nodes = 1, spot = true }
  }
  system_pool                = { min_nodes = 1, max_nodes = 2 }
  master_authorized_networks = var.gke_master_authorized_networks
  deletion_protection        = false
  labels                     = { env = "dev" }
}

module "voice_db" {
  source = "../../modules/qwen3-tts-voice-db"
  count  = local.gke ? 1 : 0

  project_id            = var.project_id
  region                = var.region
  name                  = "qwen3-tts-dev-voices"
  network_id            = module.gke[0].network_id
  high_availability     = false
  backup_retention_days = 3
  deletion_protection   = false
  labels                = { env = "dev" }
}
