# The shared voice library: Cloud SQL for PostgreSQL on a private IP in the cluster's VPC (no public
# address; TLS required), one database and one user, and the gateways' connection URL in Secret Manager
# (QWEN3_TTS_VOICE_DB_URL, copied into the Kubernetes Secret qwen3-tts; k8s/README.md).

locals {
  labels = merge({ app = "qwen3-tts", managed-by = "terraform" }, var.labels)
  # SQLAlchemy URL for the asyncpg driver; ssl=require matches ssl_mode ENCRYPTED_ONLY below.
  voice_db_url = format(
    "postgresql+asyncpg://%s:%s@%s:5432/%s?ssl=require",
    google_sql_user.app.name,
    random_password.app.result,
    google_sql_database_instance.this.private_ip_address,
    google_sql_database.voices.name,
  )
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(["sqladmin.googleapis.com", "servicenetworking.googleapis.com", "secretmanager.googleapis.com"]) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# Private services access: a range of the VPC handed to Google's service producers (Cloud SQL).
resource "google_compute_global_address" "private_services" {
  project       = var.project_id
  name          = "${var.name}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = var.network_id
}

resource "google_service_networking_connection" "private_services" {
  network                 = var.network_id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]

  depends_on = [google_project_service.apis]
}

resource "google_sql_database_instance" "this" {
  # checkov:skip=CKV_GCP_6:ssl_mode ENCRYPTED_ONLY requires TLS on every connection; client certificates would have to be mounted into every gateway pod, and the instance has only a private IP.
  project             = var.project_id
  name                = var.name
  region              = var.region
  database_version    = var.database_version
  deletion_protection = var.deletion_protection

  settings {
    tier              = var.tier
    edition           = "ENTERPRISE"
    availability_type = var.high_availability ? "REGIONAL" : "ZONAL"
    disk_type         = "PD_SSD"
    disk_size         = 10
    disk_autoresize   = true
    user_labels       = local.labels

    ip_configuration {
      ipv4_enabled    = false
      private_network = var.network_id
      # TLS on every connection. Client certificates (TRUSTED_CLIENT_CERTIFICATE_REQUIRED) would need
      # certificate files in every gateway pod; the instance has no public address at all.
      ssl_mode = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "03:00"
      backup_retention_settings {
        retained_backups = var.backup_retention_days
      }
    }

    # Audit logging: connections, locks, schema changes (log_statement ddl, pgaudit); errors only, no
    # statement text of ordinary queries (voice rows hold transcripts).
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "ddl,role"
    }
    database_flags {
      name  = "max_connections"
      value = tostring(var.max_connections)
    }

    maintenance_window {
      day          = 7
      hour         = 4
      update_track = "stable"
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "voices" {
  project  = var.project_id
  name     = "voices"
  instance = google_sql_database_instance.this.name
}

# Letters and digits only: the password sits in a URL unescaped.
resource "random_password" "app" {
  length  = 32
  special = false
}

resource "google_sql_user" "app" {
  project  = var.project_id
  name     = "qwen3_tts"
  instance = google_sql_database_instance.this.name
  password = random_password.app.result
}

resource "google_secret_manager_secret" "voice_db_url" {
  # checkov:skip=CKV_GCP_125:Google-managed encryption at rest; a customer-managed key would need a KMS key ring this stack does not otherwise use.
  project   = var.project_id
  secret_id = "${var.name}-voice-db-url"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "voice_db_url" {
  secret      = google_secret_manager_secret.voice_db_url.id
  secret_data = local.voice_db_url
}
