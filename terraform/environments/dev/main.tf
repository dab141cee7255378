# dev/staging: the cheapest way to have the real stack on a real L4. Scales to zero (pay only while
# someone is testing; the first request waits for a cold start) and never runs more than one GPU.
module "qwen3_tts" {
  source = "../../modules/qwen3-tts"

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
