variable "project_id" {
  description = "Google Cloud project of the database."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID (6-30 chars, lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the instance (the cluster's region)."
  type        = string
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1."
  }
}

variable "name" {
  description = "Instance name; also the prefix of the secret and the peering range."
  type        = string
  default     = "qwen3-tts-voices"
  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,60}[a-z0-9])?$", var.name))
    error_message = "name must be lowercase letters, digits or hyphens, starting with a letter (at most 62)."
  }
}

variable "network_id" {
  description = "VPC the instance gets its private IP in (the GKE module's network_id)."
  type        = string
  validation {
    condition     = can(regex("^projects/[^/]+/global/networks/[^/]+$", var.network_id))
    error_message = "network_id must be a network ID: projects/PROJECT/global/networks/NAME."
  }
}

variable "database_version" {
  description = "PostgreSQL major version."
  type        = string
  default     = "POSTGRES_18"
  validation {
    condition     = contains(["POSTGRES_16", "POSTGRES_17", "POSTGRES_18"], var.database_version)
    error_message = "database_version must be POSTGRES_16, POSTGRES_17 or POSTGRES_18."
  }
}

variable "tier" {
  description = "Machine tier. The voice library is small rows and reads by ID: one vCPU is plenty."
  type        = string
  default     = "db-custom-1-3840"
  validation {
    condition     = can(regex("^db-(custom-[0-9]+-[0-9]+|perf-optimized-N-[0-9]+)$", var.tier))
    error_message = "tier must be a dedicated-core tier such as db-custom-1-3840 (shared-core tiers have no SLA)."
  }
}

variable "high_availability" {
  description = "REGIONAL (a standby in another zone, automatic failover) instead of ZONAL."
  type        = bool
  default     = false
}

variable "max_connections" {
  description = "PostgreSQL max_connections: at least gateway pods x 2 x QWEN3_TTS_VOICE_DB_POOL_SIZE, plus a few for operators."
  type        = number
  default     = 200
  validation {
    condition     = var.max_connections >= 25 && var.max_connections <= 1000 && floor(var.max_connections) == var.max_connections
    error_message = "max_connections must be a whole number from 25 to 1000."
  }
}

variable "backup_retention_days" {
  description = "Daily backups kept."
  type        = number
  default     = 7
  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 365 && floor(var.backup_retention_days) == var.backup_retention_days
    error_message = "backup_retention_days must be a whole number from 1 to 365."
  }
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the instance."
  type        = bool
  default     = true
}

variable "enable_apis" {
  description = "Enable the Cloud SQL Admin, Service Networking and Secret Manager APIs (left enabled on destroy)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels on the instance and the secret."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "labels must use lowercase keys/values of letters, digits, '_' or '-' (keys start with a letter)."
  }
}
