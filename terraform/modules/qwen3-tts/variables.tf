# Every input is typed and, where a wrong value would only fail at apply time (or worse, deploy),
# validated here so `terraform plan` rejects it with a readable message.

variable "project_id" {
  description = "Google Cloud project that hosts the service and the weights bucket."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID (6-30 chars, lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Cloud Run region; must offer NVIDIA L4 GPUs on Cloud Run."
  type        = string
  validation {
    condition     = contains(["us-central1", "us-east4", "europe-west1", "europe-west4", "asia-southeast1", "asia-south1"], var.region)
    error_message = "region must be one with Cloud Run GPUs: us-central1, us-east4, europe-west1, europe-west4, asia-southeast1 or asia-south1."
  }
}

variable "name" {
  description = "Name of the Cloud Run service; also the prefix of the service account."
  type        = string
  default     = "qwen3-tts"
  validation {
    # 26 chars so that "<name>-run" fits a service account ID (max 30).
    condition     = can(regex("^[a-z]([a-z0-9-]{0,24}[a-z0-9])?$", var.name))
    error_message = "name must be 1-26 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "cloud_run_enabled" {
  description = "Create the Cloud Run service and its service account; false keeps only the weights bucket (GKE-only)."
  type        = bool
  default     = true
}

variable "gateway_image" {
  description = "Gateway image (docker/gateway.Dockerfile), pinned by tag or digest, e.g. REGION-docker.pkg.dev/PROJECT/REPO/gateway:1.2.3."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}@sha256:[a-f0-9]{64})$", var.gateway_image)) && !can(regex(":latest(@|$)", var.gateway_image))
    error_message = "gateway_image must be a registry path with an explicit tag (not latest) or an @sha256 digest."
  }
}

variable "triton_image" {
  description = "Triton GPU image (docker/triton-gpu.Dockerfile), pinned by tag or digest."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}@sha256:[a-f0-9]{64})$", var.triton_image)) && !can(regex(":latest(@|$)", var.triton_image))
    error_message = "triton_image must be a registry path with an explicit tag (not latest) or an @sha256 digest."
  }
}

variable "bucket_name" {
  description = "Globally unique name of the bucket that holds the model weights."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.bucket_name)) && !startswith(var.bucket_name, "goog")
    error_message = "bucket_name must be 3-63 lowercase letters, digits, '-' or '_', and must not start with 'goog'."
  }
}

variable "bucket_location" {
  description = "Bucket location; null puts it in the service's region (no cross-region egress on cold starts)."
  type        = string
  default     = null
  validation {
    condition     = var.bucket_location == null || can(regex("^[A-Za-z0-9-]+$", var.bucket_location))
    error_message = "bucket_location must be a location name such as us-central1, EU or US."
  }
}

variable "weights_prefix" {
  description = "Folder in the bucket holding custom_voice/, base/, voice_design/ (synced at container start)."
  type        = string
  default     = "qwen3-tts"
  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.weights_prefix))
    error_message = "weights_prefix must be a relative object path without leading/trailing '/'."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted weights object version is kept before deletion."
  type        = number
  default     = 30
  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && var.noncurrent_version_retention_days <= 365 && floor(var.noncurrent_version_retention_days) == var.noncurrent_version_retention_days
    error_message = "noncurrent_version_retention_days must be a whole number from 1 to 365."
  }
}

variable "gpu_type" {
  description = "Cloud Run GPU accelerator attached to the Triton container."
  type        = string
  default     = "nvidia-l4"
  validation {
    condition     = contains(["nvidia-l4"], var.gpu_type)
    error_message = "gpu_type must be nvidia-l4 (the GPU this stack is sized and tested for)."
  }
}

variable "gpu_zonal_redundancy_disabled" {
  description = "true: best-effort GPU capacity at the lower non-zonal-redundant price (needs that quota)."
  type        = bool
  default     = true
}

variable "min_instances" {
  description = "Instances kept warm. 0 scales to zero (cold start: weights sync + model load, minutes)."
  type        = number
  default     = 0
  validation {
    condition     = var.min_instances >= 0 && var.min_instances <= 100 && floor(var.min_instances) == var.min_instances
    error_message = "min_instances must be a whole number from 0 to 100."
  }
}

variable "max_instances" {
  description = "Upper bound on instances (each holds one L4); keep within the project's GPU quota."
  type        = number
  default     = 1
  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 100 && floor(var.max_instances) == var.max_instances
    error_message = "max_instances must be a whole number from 1 to 100."
  }
}

variable "concurrency" {
  description = "Requests one instance takes at once; bounded by the engine's batch (max_active_streams)."
  type        = number
  default     = 16
  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000 && floor(var.concurrency) == var.concurrency
    error_message = "concurrency must be a whole number from 1 to 1000."
  }
}

variable "request_timeout_seconds" {
  description = "Longest request (a long synthesis stream) before Cloud Run cuts it."
  type        = number
  default     = 600
  validation {
    condition     = var.request_timeout_seconds >= 10 && var.request_timeout_seconds <= 3600
    error_message = "request_timeout_seconds must be from 10 to 3600."
  }
}

variable "triton_resources" {
  description = "CPU and memory (GiB) of the Triton container. Synced weights live in its in-memory file system."
  type = object({
    cpu        = number
    memory_gib = number
  })
  default = { cpu = 6, memory_gib = 28 }
  validation {
    # Cloud Run's minimum for an L4 instance.
    condition     = var.triton_resources.cpu >= 4 && var.triton_resources.memory_gib >= 16
    error_message = "triton_resources needs at least 4 CPU and 16 GiB with a GPU."
  }
  validation {
    condition     = contains([4, 6, 8], var.triton_resources.cpu)
    error_message = "triton_resources.cpu must be 4, 6 or 8."
  }
}

variable "gateway_resources" {
  description = "CPU and memory (GiB) of the gateway container."
  type = object({
    cpu        = number
    memory_gib = number
  })
  default = { cpu = 2, memory_gib = 4 }
  validation {
    condition     = contains([1, 2, 4], var.gateway_resources.cpu) && var.gateway_resources.memory_gib >= 0.5
    error_message = "gateway_resources.cpu must be 1, 2 or 4 and memory_gib at least 0.5."
  }
}

variable "startup_probe" {
  description = "Startup probe of both containers (gateway: GET /ready; Triton: GET /v2/health/ready)."
  type = object({
    initial_delay_seconds = optional(number, 120)
    period_seconds        = optional(number, 10)
    failure_threshold     = optional(number, 24)
    timeout_seconds       = optional(number, 5)
  })
  default = {}
  validation {
    condition     = var.startup_probe.initial_delay_seconds >= 0 && var.startup_probe.initial_delay_seconds <= 240
    error_message = "startup_probe.initial_delay_seconds must be from 0 to 240 (Cloud Run's limit)."
  }
  validation {
    # Cloud Run: failure_threshold * period_seconds may not exceed 240 s.
    condition     = var.startup_probe.period_seconds >= 1 && var.startup_probe.failure_threshold >= 1 && var.startup_probe.period_seconds * var.startup_probe.failure_threshold <= 240
    error_message = "startup_probe.period_seconds * failure_threshold must be at most 240."
  }
  validation {
    condition     = var.startup_probe.timeout_seconds >= 1 && var.startup_probe.timeout_seconds <= var.startup_probe.period_seconds
    error_message = "startup_probe.timeout_seconds must be from 1 to period_seconds."
  }
}

variable "env" {
  description = "QWEN3_TTS_* (and other) environment variables for both containers; overrides the module's defaults."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k in keys(var.env) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", k))])
    error_message = "env keys must be valid variable names (letters, digits, underscores)."
  }
  validation {
    # Cloud Run sets these itself and rejects revisions that define them.
    condition     = length(setintersection(keys(var.env), ["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"])) == 0
    error_message = "env must not set PORT, K_SERVICE, K_REVISION or K_CONFIGURATION (reserved by Cloud Run)."
  }
  validation {
    # Cloud Run SIGKILLs 10 s after SIGTERM: Triton's drain must end in time for its errors to reach the
    # clients, and the gateway's before the kill.
    condition = alltrue([
      for name, most in { QWEN3_TTS_TRITON_DRAIN_TIMEOUT_S = 8, QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S = 9 } :
      try(tonumber(lookup(var.env, name, "1")) > 0 && tonumber(lookup(var.env, name, "1")) <= most, false)
    ])
    error_message = "env: QWEN3_TTS_TRITON_DRAIN_TIMEOUT_S must be a number of seconds in (0, 8] and QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S in (0, 9]: Cloud Run kills the containers 10 s after SIGTERM."
  }
}

variable "ingress" {
  description = "Who can reach the service URL at the network level."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"
  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "invoker_members" {
  description = "IAM members allowed to call the service (roles/run.invoker), e.g. serviceAccount:caller@p.iam.gserviceaccount.com. Empty: IAM-authenticated callers with the role granted elsewhere."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.invoker_members : can(regex("^(user|serviceAccount|group|domain|principal|principalSet):.+$", m)) || m == "allUsers"])
    error_message = "invoker_members entries must be IAM member strings (user:, serviceAccount:, group:, domain:, principal:, principalSet:) or allUsers."
  }
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the service (and keep the bucket's objects on destroy)."
  type        = bool
  default     = true
}

variable "enable_apis" {
  description = "Enable the Cloud Run and Cloud Storage APIs in the project (left enabled on destroy)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels on the service and the bucket."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "labels must use lowercase keys/values of letters, digits, '_' or '-' (keys start with a letter)."
  }
}
