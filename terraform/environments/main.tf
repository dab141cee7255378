# The one root of every environment. What an environment is (its name, sizing, scaling, protection)
# comes from its <env>.tfvars (dev.tfvars, prod.tfvars); its state from <env>.backend.hcl. Nothing here
# differs between environments.
locals {
  cloud_run = contains(var.runtimes, "cloud_run")
  gke       = contains(var.runtimes, "gke")
  labels    = { env = var.environment }
}

# The weights bucket always; the Cloud Run service when runtimes has "cloud_run".
module "qwen3_tts" {
  source = "../modules/qwen3-tts"

  cloud_run_enabled = local.cloud_run

  project_id    = var.project_id
  region        = var.region
  name          = var.name
  gateway_image = var.gateway_image
  triton_image  = var.triton_image
  bucket_name   = var.bucket_name

  min_instances                 = var.cloud_run_service.min_instances
  max_instances                 = var.cloud_run_service.max_instances
  concurrency                   = var.cloud_run_service.concurrency
  gpu_zonal_redundancy_disabled = true
  triton_resources              = var.cloud_run_service.triton_resources
  gateway_resources             = var.cloud_run_service.gateway_resources

  env = merge({ QWEN3_TTS_MAX_ACTIVE_STREAMS = tostring(var.cloud_run_service.max_active_streams) }, var.env)

  invoker_members                   = var.invoker_members
  noncurrent_version_retention_days = var.noncurrent_version_retention_days
  deletion_protection               = var.deletion_protection
  labels                            = local.labels
}

# GKE beside (or instead of) Cloud Run: a cluster with the environment's GPU pools, and the shared voice
# library. The workloads come from k8s/ (an overlay per GPU + a site overlay, k8s/README.md).
module "gke" {
  source = "../modules/qwen3-tts-gke"
  count  = local.gke ? 1 : 0

  project_id     = var.project_id
  region         = var.region
  zones          = var.gke_zones
  name           = var.name
  weights_bucket = module.qwen3_tts.weights_bucket
  images         = [var.gateway_image, var.triton_image]

  gpu_pools                  = var.gke_node_pools.gpu_pools
  system_pool                = var.gke_node_pools.system_pool
  master_authorized_networks = var.gke_master_authorized_networks
  deletion_protection        = var.deletion_protection
  labels                     = local.labels
}

module "voice_db" {
  source = "../modules/qwen3-tts-voice-db"
  count  = local.gke ? 1 : 0

  project_id            = var.project_id
  region                = var.region
  name                  = "${var.name}-voices"
  network_id            = module.gke[0].network_id
  high_availability     = var.voice_db_instance.high_availability
  backup_retention_days = var.voice_db_instance.backup_retention_days
  deletion_protection   = var.deletion_protection
  labels                = local.labels
}
