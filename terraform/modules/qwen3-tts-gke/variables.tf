# Every input is typed and validated where a wrong value would only fail at apply time.

variable "project_id" {
  description = "Google Cloud project of the cluster."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID (6-30 chars, lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the regional cluster and its network."
  type        = string
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1."
  }
}

variable "zones" {
  description = "Zones of the node pools (pick zones that offer the GPUs of gpu_pools); all in region."
  type        = list(string)
  validation {
    condition     = length(var.zones) >= 1 && alltrue([for z in var.zones : can(regex("^[a-z]+-[a-z]+[0-9]-[a-z]$", z))])
    error_message = "zones must list at least one zone such as us-central1-a."
  }
}

variable "name" {
  description = "Cluster and network name; also the prefix of the two service accounts."
  type        = string
  default     = "qwen3-tts"
  validation {
    # 23 chars so that "<name>-triton" fits a service account ID (max 30).
    condition     = can(regex("^[a-z]([a-z0-9-]{0,21}[a-z0-9])?$", var.name))
    error_message = "name must be 1-23 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "weights_bucket" {
  description = "Name of the weights bucket (the qwen3-tts module's weights_bucket output); Triton pods may read it."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.weights_bucket))
    error_message = "weights_bucket must be a bucket name."
  }
}

variable "k8s_namespace" {
  description = "Namespace of the k8s/ manifests; the Workload Identity grant names its Triton service account."
  type        = string
  default     = "qwen3-tts"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.k8s_namespace))
    error_message = "k8s_namespace must be a Kubernetes namespace name."
  }
}

variable "gpu_pools" {
  description = "GPU node pools by name, one GPU per node. The k8s overlay of the same GPU (k8s/overlays/l4, h100) runs on it."
  type = map(object({
    machine_type = string
    accelerator  = string
    min_nodes    = optional(number, 0)
    max_nodes    = number
    spot         = optional(bool, false)
    zones        = optional(list(string))
    disk_size_gb = optional(number, 200)
  }))
  default = {
    l4 = { machine_type = "g2-standard-8", accelerator = "nvidia-l4", max_nodes = 8 }
    # a3-highgpu-1g (one H100) is sold as Spot or flex-start capacity only, not on demand.
    h100 = { machine_type = "a3-highgpu-1g", accelerator = "nvidia-h100-80gb", max_nodes = 4, spot = true }
  }
  validation {
    condition     = length(var.gpu_pools) >= 1 && alltrue([for k, p in var.gpu_pools : can(regex("^[a-z][a-z0-9-]{0,30}$", k))])
    error_message = "gpu_pools needs at least one pool; names are lowercase letters, digits and hyphens."
  }
  validation {
    # The machine family fixes the GPU: G2 carries L4s, A3 High H100 80 GB.
    condition = alltrue([for p in var.gpu_pools : (
      (p.accelerator == "nvidia-l4" && can(regex("^g2-standard-(4|8|12|16|32)$", p.machine_type))) ||
      (p.accelerator == "nvidia-h100-80gb" && p.machine_type == "a3-highgpu-1g")
    )])
    error_message = "gpu_pools: accelerator nvidia-l4 needs a g2-standard-4/8/12/16/32 machine, nvidia-h100-80gb needs a3-highgpu-1g (one GPU per node)."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : p.min_nodes >= 0 && p.max_nodes >= 1 && p.max_nodes <= 100 && p.min_nodes <= p.max_nodes && floor(p.max_nodes) == p.max_nodes])
    error_message = "gpu_pools: min_nodes from 0, max_nodes from 1 to 100, min_nodes <= max_nodes (per zone)."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : p.disk_size_gb >= 100])
    error_message = "gpu_pools: disk_size_gb at least 100 (the image, and the weights synced to the node's disk)."
  }
}

variable "system_pool" {
  description = "CPU pool for the gateways, Prometheus and cluster add-ons (nodes in total across zones)."
  type = object({
    machine_type = optional(string, "e2-standard-4")
    min_nodes    = optional(number, 1)
    max_nodes    = optional(number, 6)
  })
  default = {}
  validation {
    condition     = var.system_pool.min_nodes >= 1 && var.system_pool.min_nodes <= var.system_pool.max_nodes
    error_message = "system_pool: min_nodes at least 1 and at most max_nodes."
  }
}

variable "release_channel" {
  description = "GKE release channel (control plane and node versions follow it)."
  type        = string
  default     = "REGULAR"
  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "network_ranges" {
  description = "CIDR ranges of the cluster's VPC: nodes, pods, services, and the control plane's /28."
  type = object({
    nodes         = optional(string, "10.10.0.0/20")
    pods          = optional(string, "10.20.0.0/14")
    services      = optional(string, "10.24.0.0/20")
    control_plane = optional(string, "172.16.0.0/28")
  })
  default = {}
  validation {
    condition     = alltrue([for r in values(var.network_ranges) : can(cidrhost(r, 0))])
    error_message = "network_ranges entries must be CIDR ranges such as 10.10.0.0/20."
  }
  validation {
    condition     = endswith(var.network_ranges.control_plane, "/28")
    error_message = "network_ranges.control_plane must be a /28."
  }
}

variable "master_authorized_networks" {
  description = "Networks allowed to reach the cluster's API endpoint (kubectl), e.g. an office or CI range."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr_block, 0)) && n.cidr_block != "0.0.0.0/0"])
    error_message = "master_authorized_networks entries must be CIDR ranges, and not 0.0.0.0/0."
  }
}

variable "images" {
  description = "Image references the cluster runs (gateway, Triton). The nodes may pull from each Artifact Registry repository of this project named here, and from no other."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for i in var.images : !can(regex(":latest(@|$)", i)) && can(regex("(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[a-f0-9]{64})$", i))])
    error_message = "images must carry an explicit tag other than latest, or a digest."
  }
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the cluster."
  type        = bool
  default     = true
}

variable "enable_apis" {
  description = "Enable the GKE, Compute Engine and IAM APIs in the project (left enabled on destroy)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels on the cluster and its nodes."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "labels must use lowercase keys/values of letters, digits, '_' or '-' (keys start with a letter)."
  }
}
