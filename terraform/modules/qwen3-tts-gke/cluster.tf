# A regional GKE Standard cluster (control plane in three zones; nodes where the GPUs are), private nodes,
# Dataplane V2 (enforces the NetworkPolicies in k8s/), Workload Identity, and node pools:
#   system    CPU nodes for the gateways, Prometheus and the adapter, cluster add-ons
#   <gpu>     one pool per var.gpu_pools entry: one GPU per node, autoscaled from min_nodes (0 allowed)
# The pods themselves come from k8s/ (kubectl apply -k), not from Terraform.

resource "google_container_cluster" "this" {
  # checkov:skip=CKV_GCP_65:RBAC through Google Groups needs a Workspace/Cloud Identity group per organisation; IAM roles bind users here.
  project  = var.project_id
  name     = var.name
  location = var.region
  # Zones of the nodes (GPU capacity is per zone); the control plane stays regional.
  node_locations      = var.zones
  deletion_protection = var.deletion_protection
  resource_labels     = local.labels

  network    = google_compute_network.this.id
  subnetwork = google_compute_subnetwork.nodes.id
  # Dataplane V2 enforces NetworkPolicy itself; the Calico add-on stays off (it cannot run beside it).
  datapath_provider = "ADVANCED_DATAPATH"
  network_policy {
    enabled = false
  }
  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  # Node pools are managed below, one resource each; the default pool only exists during creation.
  remove_default_node_pool = true
  initial_node_count       = 1

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = local.workload_pool
  }

  private_cluster_config {
    enable_private_nodes = true
    # The API endpoint keeps a public address, restricted to master_authorized_networks.
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.network_ranges.control_plane
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  enable_legacy_abac          = false

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }
  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
  }

  # Settings of the short-lived default pool, so that it is hardened too.
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    metadata = {
      disable-legacy-endpoints = "true"
    }
  }

  lifecycle {
    ignore_changes = [node_config]
    precondition {
      condition     = alltrue([for z in var.zones : startswith(z, "${var.region}-")])
      error_message = "zones must all be zones of region."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.nodes,
  ]
}

resource "google_container_node_pool" "system" {
  project  = var.project_id
  name     = "system"
  cluster  = google_container_cluster.this.id
  location = var.region

  autoscaling {
    total_min_node_count = var.system_pool.min_nodes
    total_max_node_count = var.system_pool.max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.system_pool.machine_type
    disk_size_gb    = 100
    disk_type       = "pd-balanced"
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    resource_labels = local.labels

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    metadata = {
      disable-legacy-endpoints = "true"
    }
  }
}

# One pool per GPU kind. GKE labels the nodes cloud.google.com/gke-accelerator=<accelerator> (the k8s
# overlays select on it) and taints them nvidia.com/gpu=present:NoSchedule; it installs the driver itself.
resource "google_container_node_pool" "gpu" {
  for_each = var.gpu_pools

  project        = var.project_id
  name           = each.key
  cluster        = google_container_cluster.this.id
  location       = var.region
  node_locations = coalesce(each.value.zones, var.zones)

  # Per zone: the cluster autoscaler adds a node when a Triton pod is pending (the HPA asked for it) and
  # removes an idle one after the pod has drained.
  autoscaling {
    min_node_count  = each.value.min_nodes
    max_node_count  = each.value.max_nodes
    location_policy = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  # A node upgrade replaces one GPU node at a time (the PodDisruptionBudget lets one Triton pod go).
  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = each.value.machine_type
    disk_size_gb    = each.value.disk_size_gb
    disk_type       = "pd-ssd"
    image_type      = "COS_CONTAINERD"
    spot            = each.value.spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    resource_labels = local.labels

    guest_accelerator {
      type  = each.value.accelerator
      count = 1
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    metadata = {
      disable-legacy-endpoints = "true"
    }
  }

  lifecycle {
    precondition {
      condition     = each.value.min_nodes <= each.value.max_nodes
      error_message = "gpu_pools.${each.key}: min_nodes must not exceed max_nodes."
    }
  }
}
