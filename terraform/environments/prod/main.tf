# prod: one L4 instance always warm (no cold start for users), scaling out under load. GPU zonal
# redundancy stays off: cheaper GPU-seconds for best-effort capacity; turn it on if a zone outage
# must not reduce capacity (needs the zonal-redundant GPU quota).
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
  name          = "qwen3-tts"
  gateway_image = var.gateway_image
  triton_image  = var.triton_image
  bucket_name   = var.bucket_name

  min_instances                 = 1
  max_instances                 = 4
  concurrency                   = 16
  gpu_zonal_redundancy_disabled = true
  triton_resources              = { cpu = 6, memory_gib = 28 }
  gateway_resources             = { cpu = 2, memory_gib = 4 }

  env = merge({ QWEN3_TTS_MAX_ACTIVE_STREAMS = "32" }, var.env)

  invoker_members     = var.invoker_members
  deletion_protection = true
  labels              = { env = "prod" }
}

# GKE beside (or instead of) Cloud Run: L4 and H100 pools (k8s/overlays/l4, k8s/overlays/h100), one
# warm L4 node, and the shared voice library with a standby in a second zone.
module "gke" {
  source = "../../modules/qwen3-tts-gke"
  count  = local.gke ? 1 : 0

  project_id     = var.project_id
  region         = var.region
  zones          = var.gke_zones
  name           = "qwen3-tts"
  weights_bucket = module.qwen3_tts.weights_bucket
  images         = [var.gateway_image, var.triton_image]

  gpu_pools = {
    l4 = { machine_type = "g2-standard-8", accelerator = "nvidia-l4", min_nodes = 1, max_nodes = 8 }
    # a3-highgpu-1g is sold as Spot or flex-start capacity only.
    h100 = { machine_type = "a3-highgpu-1g", accelerator = "nvidia-h100-80gb", min_nodes = 0, max_nodes = 4, spot = true }
  }
  system_pool                = { min_nodes = 2, max_nodes = 6 }
  master_authorized_networks = var.gke_master_authorized_networks
  deletion_protection        = true
  labels                     = { env = "prod" }
}

module "voice_db" {
  source = "../../modules/qwen3-tts-voice-db"
  count  = local.gke ? 1 : 0

  project_id            = var.project_id
  region                = var.region
  name                  = "qwen3-tts-voices"
  network_id            = module.gke[0].network_id
  high_availability     = true
  backup_retention_days = 14
  deletion_protection   = true
  labels                = { env = "prod" }
}
