# The cluster's own VPC: one subnet with secondary ranges for pods and services (VPC-native), Private
# Google Access (nodes reach GCS and Artifact Registry without public IPs), and Cloud NAT for everything
# else the nodes pull (e.g. the Prometheus and adapter images). Cloud SQL peers into this VPC
# (modules/qwen3-tts-voice-db), so the gateways reach it on a private IP.

resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = var.name
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "nodes" {
  project                  = var.project_id
  name                     = "${var.name}-nodes"
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.network_ranges.nodes
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.network_ranges.pods
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.network_ranges.services
  }

  # Sampled flow logs: enough to debug who talks to whom without paying for every packet.
  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.1
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "nat" {
  project = var.project_id
  name    = "${var.name}-nat"
  region  = var.region
  network = google_compute_network.this.id
}

resource "google_compute_router_nat" "nat" {
  project                            = var.project_id
  name                               = "${var.name}-nat"
  router                             = google_compute_router.nat.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Load balancer health checks and proxied traffic from Google's front ends to the gateway pods (port 8080,
# container-native load balancing). GKE adds its own rules for what it manages; nothing else is opened.
resource "google_compute_firewall" "load_balancer_to_gateways" {
  project       = var.project_id
  name          = "${var.name}-lb-to-gateways"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = ["35.191.0.0/16", "130.211.0.0/22"]

  allow {
    protocol = "tcp"
    ports    = ["8080"]
  }

  log_config {
    metadata = "EXCLUDE_ALL_METADATA"
  }
}
