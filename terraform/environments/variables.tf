# Two kinds of input. Your project's values (project, images, bucket, who may call) go in your own
# <env>.site.tfvars (site.tfvars.example). What an environment is (name, sizing, scaling, protection) is
# in the committed dev.tfvars / prod.tfvars; those variables have no default, so an environment's file
# must set each of them. Values that go straight into a module are validated once, by that module (the
# GKE ones by the GKE module, which exists when runtimes has "gke": unused, they are not checked).

# --- your project (<env>.site.tfvars) -------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region with Cloud Run L4 GPUs (the qwen3-tts module lists them)."
  type        = string
  default     = "us-central1"
}

variable "gateway_image" {
  description = "Gateway image, pinned by tag or digest."
  type        = string
}

variable "triton_image" {
  description = "Triton GPU image, pinned by tag or digest."
  type        = string
}

variable "bucket_name" {
  description = "Globally unique name for this environment's weights bucket."
  type        = string
}

variable "env" {
  description = "Extra environment variables for both containers (QWEN3_TTS_* settings)."
  type        = map(string)
  default     = {}
}

variable "invoker_members" {
  description = "IAM members allowed to invoke the service."
  type        = list(string)
  default     = []
}

variable "runtimes" {
  description = "Where the stack runs: \"cloud_run\" (the L4 service), \"gke\" (cluster + Cloud SQL voice library, workloads from k8s/), or both."
  type        = set(string)
  default     = ["cloud_run"]
  validation {
    condition     = length(var.runtimes) >= 1 && length(setsubtract(var.runtimes, ["cloud_run", "gke"])) == 0
    error_message = "runtimes must name at least one of cloud_run and gke."
  }
}

variable "gke_zones" {
  description = "Zones of the GKE node pools (with runtimes gke): zones of region that offer the pools' GPUs."
  type        = list(string)
  default     = ["us-central1-a", "us-central1-c"]
}

variable "gke_master_authorized_networks" {
  description = "CIDR ranges allowed to reach the GKE API endpoint (kubectl), e.g. an office or CI range."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
}

# --- the environment (dev.tfvars, prod.tfvars) ----------------------------------------------------------

variable "environment" {
  description = "Environment name (dev, prod): the env label of every resource, checked by the modules' labels."
  type        = string
}

variable "name" {
  description = "Name of the Cloud Run service and the GKE cluster, prefix of their service accounts; the voice library is <name>-voices."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the service, the cluster and the database (and keep the bucket's objects)."
  type        = bool
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted weights object version is kept."
  type        = number
}

variable "cloud_run_service" {
  description = "The Cloud Run service: min/max instances, concurrency and container resources (inputs of the qwen3-tts module), and the engine's QWEN3_TTS_MAX_ACTIVE_STREAMS (var.env may override it)."
  type = object({
    min_instances      = number
    max_instances      = number
    concurrency        = number
    max_active_streams = number
    triton_resources   = object({ cpu = number, memory_gib = number })
    gateway_resources  = object({ cpu = number, memory_gib = number })
  })
  validation {
    # A request beyond the engine's batch would wait inside the instance instead of scaling out.
    condition     = var.cloud_run_service.max_active_streams >= 1 && floor(var.cloud_run_service.max_active_streams) == var.cloud_run_service.max_active_streams && var.cloud_run_service.concurrency <= var.cloud_run_service.max_active_streams
    error_message = "cloud_run_service.max_active_streams must be a whole number, at least concurrency."
  }
}

variable "gke_node_pools" {
  description = "GKE pools (runtimes gke): gpu_pools and system_pool, as the qwen3-tts-gke module's inputs of the same names."
  type = object({
    gpu_pools   = any
    system_pool = any
  })
}

variable "voice_db_instance" {
  description = "Cloud SQL voice library (runtimes gke): high_availability and backup_retention_days, as the qwen3-tts-voice-db module's inputs."
  type = object({
    high_availability     = bool
    backup_retention_days = number
  })
}
