# prod: one L4 instance always warm (no cold start for users), scaling out under load. GPU zonal
# redundancy stays off: cheaper GPU-seconds for best-effort capacity; turn it on if a zone outage
# must not reduce capacity (needs the zonal-redundant GPU quota).
module "qwen3_tts" {
  source = "../../modules/qwen3-tts"

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
