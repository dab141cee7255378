# Identities of the cluster. Two Google service accounts, each with the least it needs:
#   <name>-nodes   the nodes: GKE's node role (logs, metrics) and read access to the image repositories
#   <name>-triton  the Triton pods (through Workload Identity): objectViewer on the weights bucket only

locals {
  labels        = merge({ app = "qwen3-tts", managed-by = "terraform" }, var.labels)
  workload_pool = "${var.project_id}.svc.id.goog"
  # The Kubernetes service account of the Triton pods (k8s/base/serviceaccounts.yaml).
  triton_ksa = "serviceAccount:${local.workload_pool}[${var.k8s_namespace}/qwen3-tts-triton]"
  # LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE of var.images, in this project: repositories to read.
  registry_pattern = "^([a-z0-9-]+)-docker\\.pkg\\.dev/([a-z][a-z0-9-]+)/([a-z][a-z0-9-]*)/"
  image_repositories = {
    for parts in [for image in var.images : regex(local.registry_pattern, image) if can(regex(local.registry_pattern, image))] :
    "${parts[0]}/${parts[2]}" => { location = parts[0], repository = parts[2] } if parts[1] == var.project_id
  }
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(["container.googleapis.com", "compute.googleapis.com", "iam.googleapis.com"]) : toset([])

  project = var.project_id
  service = each.value
  # Other workloads in the project may use these APIs: never switch them off on destroy.
  disable_on_destroy = false
}

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "Qwen3-TTS GKE nodes (${var.name})"

  depends_on = [google_project_service.apis]
}

# GKE's predefined role for node service accounts (write logs and metrics, read node metadata). It only
# exists at project level; tests/deploy allow no other project-level grant.
resource "google_project_iam_member" "nodes" {
  project = var.project_id
  role    = "roles/container.defaultNodeServiceAccount"
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

# Image pulls: reader on the repositories of var.images only.
resource "google_artifact_registry_repository_iam_member" "nodes_pull_images" {
  for_each = local.image_repositories

  project    = var.project_id
  location   = each.value.location
  repository = each.value.repository
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_service_account" "triton" {
  project      = var.project_id
  account_id   = "${var.name}-triton"
  display_name = "Qwen3-TTS Triton pods on GKE (${var.name})"

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "triton_reads_weights" {
  bucket = var.weights_bucket
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.triton.email}"
}

# Workload Identity: the Kubernetes service account qwen3-tts-triton may act as the Google one, nothing
# else may. Granted on that service account, not on the project.
resource "google_service_account_iam_member" "triton_workload_identity" {
  service_account_id = google_service_account.triton.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.triton_ksa

  # The workload pool exists once the cluster does.
  depends_on = [google_container_cluster.this]
}
