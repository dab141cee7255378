#!/usr/bin/env bash
# Exercise the module's variable validation blocks with terraform itself: a good set of values must plan,
# and each bad value must be rejected. Only variables.tf is copied, so no provider (and no registry) is
# needed. Run by `make deploy-lint` when terraform is installed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1
cp "$repo/terraform/modules/qwen3-tts/variables.tf" "$work/"
cd "$work"

cat > good.tfvars <<'VARS'
project_id    = "my-project-1"
region        = "us-central1"
gateway_image = "us-central1-docker.pkg.dev/my-project-1/qwen3-tts/gateway:0.1.0"
triton_image  = "us-central1-docker.pkg.dev/my-project-1/qwen3-tts/triton-gpu:0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
bucket_name   = "my-project-1-weights"
env           = { QWEN3_TTS_MAX_ACTIVE_STREAMS = "16" }
VARS

terraform init -backend=false -input=false >/dev/null
terraform plan -input=false -var-file=good.tfvars >/dev/null || { echo "FAIL: good values were rejected" >&2; exit 1; }

failed=0
count=0
while IFS= read -r bad; do
  count=$((count + 1))
  if terraform plan -input=false -var-file=good.tfvars -var "$bad" >/dev/null 2>&1; then
    echo "FAIL: accepted $bad" >&2
    failed=1
  fi
done <<'BAD'
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
ingress=PUBLIC
invoker_members=["bob@example.com"]
labels={Env="Dev"}
BAD
[[ $failed == 0 ]] && echo "terraform variable validations: good values plan, $count bad values rejected"
exit "$failed"
