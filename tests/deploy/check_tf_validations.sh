#!/usr/bin/env bash
# Exercise the variable validation blocks with terraform itself: for each module, and for the root with
# each environment's tfvars, a good set of values must plan, and each bad value must be rejected. No
# provider (and no registry) is needed: a module is planned from its variables.tf alone; the root from its
# main.tf + variables.tf over the modules' variables.tf, each module's outputs stubbed as values known only
# after apply. So the root's plan checks every value an environment's tfvars gives a module against that
# module's validations. Run by `make deploy-lint` when terraform is installed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1

failed=0
total=0

# check_plans LABEL DIR VAR_FILE...: DIR plans with the var files; each bad value (one per stdin line) fails.
check_plans() {
  local label="$1" dir="$2" count=0 bad
  shift 2
  local var_files=()
  for file in "$@"; do var_files+=("-var-file=$file"); done
  (cd "$dir" && terraform init -backend=false -input=false >/dev/null)
  if ! (cd "$dir" && terraform plan -input=false -no-color "${var_files[@]}" >/dev/null); then
    echo "FAIL: $label: good values were rejected" >&2
    failed=1
    return
  fi
  while IFS= read -r bad; do
    count=$((count + 1))
    if (cd "$dir" && terraform plan -input=false "${var_files[@]}" -var "$bad" >/dev/null 2>&1); then
      echo "FAIL: $label accepted $bad" >&2
      failed=1
    fi
  done
  total=$((total + count))
}

# check_module FOLDER (relative to terraform/): good values from good.tfvars, one bad value per stdin line.
check_module() {
  local dir="$work/${1//\//_}"
  mkdir -p "$dir"
  cp "$repo/terraform/$1/variables.tf" "$dir/"
  cp "$work/good.tfvars" "$dir/good.tfvars"
  check_plans "$1" "$dir" good.tfvars
}

# check_root ENV: the root (terraform/environments) with good.tfvars after ENV.tfvars, one bad value per
# stdin line. The modules sit beside it as in the tree: variables.tf, and outputs unknown until apply.
check_root() {
  local env="$1" tree="$work/root-$1" module name
  mkdir -p "$tree/environments"
  cp "$repo"/terraform/environments/{main,variables}.tf "$repo/terraform/environments/$env.tfvars" "$tree/environments/"
  cp "$work/good.tfvars" "$tree/environments/good.tfvars"
  for module in "$repo"/terraform/modules/*/; do
    name="$(basename "$module")"
    mkdir -p "$tree/modules/$name"
    cp "$module/variables.tf" "$tree/modules/$name/"
    {
      echo 'resource "terraform_data" "unknown_until_apply" {}'
      sed -n 's/^output "\([a-z_]*\)".*/output "\1" { value = terraform_data.unknown_until_apply.id }/p' "$module/outputs.tf"
    } >"$tree/modules/$name/outputs.tf"
  done
  check_plans "environments with $env.tfvars" "$tree/environments" "$env.tfvars" good.tfvars
}

cat > "$work/good.tfvars" <<'VARS'
project_id    = "my-project-1"
region        = "us-central1"
gateway_image = "us-central1-docker.pkg.dev/my-project-1/qwen3-tts/gateway:0.1.0"
triton_image  = "us-central1-docker.pkg.dev/my-project-1/qwen3-tts/triton-gpu:0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
bucket_name   = "my-project-1-weights"
env           = { QWEN3_TTS_MAX_ACTIVE_STREAMS = "16", QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S = "9" }
VARS
check_module modules/qwen3-tts <<'BAD'
gateway_image=us-docker.pkg.dev/p/r/gateway:latest
gateway_image=us-docker.pkg.dev/p/r/gateway
triton_image=us-docker.pkg.dev/p/r/triton@sha256:PLACEHOLDER
region=us-west1
gpu_type=nvidia-t4
name=Bad_Name
bucket_name=goog-weights
min_instances=-1
max_instances=0
concurrency=0
startup_probe={period_seconds=30, failure_threshold=10}
startup_probe={initial_delay_seconds=300}
startup_probe={timeout_seconds=20}
triton_resources={cpu=2, memory_gib=8}
gateway_resources={cpu=3, memory_gib=4}
env={PORT="1"}
env={"bad-key"="1"}
env={QWEN3_TTS_TRITON_DRAIN_TIMEOUT_S="30"}
env={QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S="10"}
env={QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S="soon"}
ingress=PUBLIC
invoker_members=["bob@example.com"]
labels={Env="Dev"}
BAD

cat > "$work/good.tfvars" <<'VARS'
project_id     = "my-project-1"
region         = "us-central1"
zones          = ["us-central1-a", "us-central1-c"]
weights_bucket = "my-project-1-weights"
images         = ["us-central1-docker.pkg.dev/my-project-1/qwen3-tts/gateway:0.1.0"]
master_authorized_networks = [{ cidr_block = "203.0.113.0/24", display_name = "office" }]
VARS
check_module modules/qwen3-tts-gke <<'BAD'
zones=[]
zones=["us-central1"]
name=qwen3-tts-name-too-long-x
gpu_pools={}
gpu_pools={l4={machine_type="a3-highgpu-1g", accelerator="nvidia-l4", max_nodes=2}}
gpu_pools={h100={machine_type="a3-highgpu-8g", accelerator="nvidia-h100-80gb", max_nodes=2}}
gpu_pools={l4={machine_type="g2-standard-8", accelerator="nvidia-t4", max_nodes=2}}
gpu_pools={l4={machine_type="g2-standard-8", accelerator="nvidia-l4", min_nodes=3, max_nodes=2}}
gpu_pools={l4={machine_type="g2-standard-8", accelerator="nvidia-l4", max_nodes=2, disk_size_gb=50}}
system_pool={min_nodes=0}
release_channel=EXTENDED_FOREVER
network_ranges={control_plane="172.16.0.0/24"}
network_ranges={pods="not-a-range"}
master_authorized_networks=[{cidr_block="0.0.0.0/0", display_name="anyone"}]
images=["us-docker.pkg.dev/p/r/gateway:latest"]
k8s_namespace=Qwen3_TTS
BAD

cat > "$work/good.tfvars" <<'VARS'
project_id = "my-project-1"
region     = "us-central1"
network_id = "projects/my-project-1/global/networks/qwen3-tts"
VARS
check_module modules/qwen3-tts-voice-db <<'BAD'
network_id=qwen3-tts
database_version=POSTGRES_9_6
database_version=MYSQL_8_0
tier=db-f1-micro
max_connections=10
backup_retention_days=0
name=Voices
BAD

for env in dev prod; do
  # The site's values (site.tfvars.example), both runtimes so that every module is planned.
  cat > "$work/good.tfvars" <<'VARS'
project_id    = "my-project-1"
gateway_image = "us-central1-docker.pkg.dev/my-project-1/qwen3-tts/gateway:0.1.0"
triton_image  = "us-central1-docker.pkg.dev/my-project-1/qwen3-tts/triton-gpu:0.1.0"
bucket_name   = "my-project-1-weights"
runtimes      = ["cloud_run", "gke"]
VARS
  check_root "$env" <<'BAD'
runtimes=[]
runtimes=["kubernetes"]
gke_zones=["central"]
gke_master_authorized_networks=[{cidr_block="0.0.0.0/0", display_name="anyone"}]
project_id=My_Project
region=us-west1
gateway_image=us-docker.pkg.dev/p/r/gateway:latest
bucket_name=goog-weights
env={PORT="1"}
invoker_members=["bob@example.com"]
environment=Prod
name=Qwen3
cloud_run_service={min_instances=0, max_instances=1, concurrency=32, max_active_streams=16, triton_resources={cpu=4, memory_gib=24}, gateway_resources={cpu=1, memory_gib=2}}
gke_node_pools={gpu_pools={l4={machine_type="g2-standard-8", accelerator="nvidia-l4", max_nodes=0}}, system_pool={}}
voice_db_instance={high_availability=false, backup_retention_days=0}
BAD
done

[[ $failed == 0 ]] && echo "terraform variable validations: good values plan in every module and in the root with each environment, $total bad values rejected"
exit "$failed"
