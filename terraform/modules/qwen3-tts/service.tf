# One Cloud Run service, two containers in each instance:
#   gateway (ingress, port 8080) -> 127.0.0.1:8001 gRPC -> triton (sidecar, holds the L4 GPU)
# Sidecars share the instance's network namespace, so the gateway reaches Triton on localhost and Triton's
# ports are never exposed outside the instance.

locals {
  # Module defaults first, then var.env: a caller can override any of them.
  env = merge(
    {
      QWEN3_TTS_GCS_MODEL_BUCKET    = local.weights_url
      QWEN3_TTS_CACHE_DIR           = "/models"
      QWEN3_TTS_CHECKPOINT_DIR      = "/models/checkpoints/gcs"
      QWEN3_TTS_DEVICE              = "cuda"
      QWEN3_TTS_TRITON_HOST         = "127.0.0.1"
      QWEN3_TTS_TRITON_HTTP_PORT    = "8000"
      QWEN3_TTS_TRITON_GRPC_PORT    = "8001"
      QWEN3_TTS_TRITON_METRICS_PORT = "8002"
      QWEN3_TTS_GATEWAY_HOST        = "0.0.0.0"
      QWEN3_TTS_REQUEST_TIMEOUT_S   = tostring(var.request_timeout_seconds)
      # Cloud Run SIGKILLs an instance's containers 10 s after SIGTERM, not after the 30 s drains the
      # settings default to. Triton ends what is still live at 6 s with its "retry" error, and the gateway
      # has until 8 s to pass those errors on and close: no stream is cut without a word.
      QWEN3_TTS_TRITON_DRAIN_TIMEOUT_S  = "6"
      QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S = "8"
    },
    var.env,
  )
  # The gateway keeps its voice library in its own writable cache dir, not in the weights folder.
  gateway_env = merge(local.env, { QWEN3_TTS_CACHE_DIR = "/var/lib/qwen3-tts" })
}

resource "google_cloud_run_v2_service" "this" {
  count = var.cloud_run_enabled ? 1 : 0

  project             = var.project_id
  name                = var.name
  location            = var.region
  ingress             = var.ingress
  deletion_protection = var.deletion_protection
  labels              = local.labels

  template {
    service_account                  = google_service_account.runtime[0].email
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    timeout                          = "${var.request_timeout_seconds}s"
    max_instance_request_concurrency = var.concurrency
    gpu_zonal_redundancy_disabled    = var.gpu_zonal_redundancy_disabled
    labels                           = local.labels

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    node_selector {
      accelerator = var.gpu_type
    }

    containers {
      name  = "gateway"
      image = var.gateway_image

      ports {
        container_port = 8080
      }

      dynamic "env" {
        for_each = local.gateway_env
        content {
          name  = env.key
          value = env.value
        }
      }

      resources {
        limits = {
          cpu    = tostring(var.gateway_resources.cpu)
          memory = "${var.gateway_resources.memory_gib * 1024}Mi"
        }
        # CPU always allocated: GPU services require instance-based billing, and streams keep producing
        # audio between request chunks.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      # /ready is true once Triton and every model are ready, so traffic only reaches a loaded instance.
      # No depends_on: the gateway boots while Triton syncs weights, and this probe gates traffic anyway.
      startup_probe {
        initial_delay_seconds = var.startup_probe.initial_delay_seconds
        period_seconds        = var.startup_probe.period_seconds
        failure_threshold     = var.startup_probe.failure_threshold
        timeout_seconds       = var.startup_probe.timeout_seconds
        http_get {
          path = "/ready"
          port = 8080
        }
      }

      liveness_probe {
        period_seconds    = 30
        failure_threshold = 3
        timeout_seconds   = 5
        http_get {
          path = "/health"
          port = 8080
        }
      }
    }

    containers {
      name  = "triton"
      image = var.triton_image

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }

      resources {
        limits = {
          cpu              = tostring(var.triton_resources.cpu)
          memory           = "${var.triton_resources.memory_gib * 1024}Mi"
          "nvidia.com/gpu" = "1"
        }
        cpu_idle          = false
        startup_cpu_boost = true
      }

      startup_probe {
        initial_delay_seconds = var.startup_probe.initial_delay_seconds
        period_seconds        = var.startup_probe.period_seconds
        failure_threshold     = var.startup_probe.failure_threshold
        timeout_seconds       = var.startup_probe.timeout_seconds
        http_get {
          path = "/v2/health/ready"
          port = 8000
        }
      }

      liveness_probe {
        period_seconds    = 30
        failure_threshold = 3
        timeout_seconds   = 5
        http_get {
          path = "/v2/health/live"
          port = 8000
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.min_instances <= var.max_instances
      error_message = "min_instances must not exceed max_instances."
    }
    precondition {
      condition     = var.triton_resources.cpu + var.gateway_resources.cpu <= 8 && var.triton_resources.memory_gib + var.gateway_resources.memory_gib <= 32
      error_message = "A Cloud Run instance has at most 8 CPU and 32 GiB across its containers."
    }
  }

  depends_on = [
    google_project_service.apis,
    # The revision must be able to read the weights the moment its first instance starts.
    google_storage_bucket_iam_member.runtime_reads_weights,
  ]
}

resource "google_cloud_run_v2_service_iam_member" "invokers" {
  for_each = var.cloud_run_enabled ? toset(var.invoker_members) : toset([])

  project  = var.project_id
  location = google_cloud_run_v2_service.this[0].location
  name     = google_cloud_run_v2_service.this[0].name
  role     = "roles/run.invoker"
  member   = each.value
}
