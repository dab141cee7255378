# Only what differs between projects; sizing for this environment is fixed in main.tf, on purpose.

variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID."
  }
}

variable "region" {
  description = "Region with Cloud Run L4 GPUs."
  type        = string
  default     = "us-central1"
  validation {
    condition     = contains(["us-central1", "us-east4", "europe-west1", "europe-west4", "asia-southeast1", "asia-south1"], var.region)
    error_message = "region must offer Cloud Run GPUs."
  }
}

variable "gateway_image" {
  description = "Gateway image, pinned by tag or digest."
  type        = string
  validation {
    condition     = !can(regex(":latest(@|$)", var.gateway_image)) && can(regex("(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[a-f0-9]{64})$", var.gateway_image))
    error_message = "gateway_image needs an explicit tag other than latest, or a digest."
  }
}

variable "triton_image" {
  description = "Triton GPU image, pinned by tag or digest."
  type        = string
  validation {
    condition     = !can(regex(":latest(@|$)", var.triton_image)) && can(regex("(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[a-f0-9]{64})$", var.triton_image))
    error_message = "triton_image needs an explicit tag other than latest, or a digest."
  }
}

variable "bucket_name" {
  description = "Globally unique name for this environment's weights bucket."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid bucket name."
  }
}

variable "env" {
  description = "Extra environment variables for both containers (QWEN3_TTS_* settings)."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k in keys(var.env) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", k))])
    error_message = "env keys must be valid variable names."
  }
}

variable "invoker_members" {
  description = "IAM members allowed to invoke the service."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.invoker_members : can(regex("^(user|serviceAccount|group|domain|principal|principalSet):.+$", m)) || m == "allUsers"])
    error_message = "invoker_members entries must be IAM member strings or allUsers."
  }
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
  validation {
    condition     = length(var.gke_zones) >= 1 && alltrue([for z in var.gke_zones : can(regex("^[a-z]+-[a-z]+[0-9]-[a-z]$", z))])
    error_message = "gke_zones must list zones such as us-central1-a."
  }
}

variable "gke_master_authorized_networks" {
  description = "CIDR ranges allowed to reach the GKE API endpoint (kubectl), e.g. an office or CI range."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
  validation {
    condition     = alltrue([for n in var.gke_master_authorized_networks : can(cidrhost(n.cidr_block, 0)) && n.cidr_block != "0.0.0.0/0"])
    error_message = "gke_master_authorized_networks entries must be CIDR ranges, and not 0.0.0.0/0."
  }
}
