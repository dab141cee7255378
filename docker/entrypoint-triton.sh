#!/usr/bin/env bash
# Start-up of the GPU Triton image: weights, model repository, then exec tritonserver (PID 1 gets signals).
#
# Weights, first match wins:
#   1. QWEN3_TTS_GCS_MODEL_BUCKET (or GCS_MODEL_BUCKET) = gs://bucket/prefix: synced into
#      QWEN3_TTS_CHECKPOINT_DIR (default $QWEN3_TTS_CACHE_DIR/checkpoints/gcs) by gcs_sync.py.
#   2. QWEN3_TTS_CHECKPOINT_DIR set: a mounted model cache, used as is (must not be empty).
#   3. neither: the project's tiny random checkpoints (qwen3-tts-checkpoints), for a smoke run.
# Nothing is cloned or pip-installed here: everything ran at image build.
# Extra arguments are passed on to tritonserver. *_BIN variables and SHM_DIR let tests stand in fakes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python_bin="${PYTHON_BIN:-python3}"
tritonserver_bin="${TRITONSERVER_BIN:-tritonserver}"
checkpoints_bin="${CHECKPOINTS_BIN:-qwen3-tts-checkpoints}"
repo_dir="${TRITON_MODEL_REPOSITORY:-/opt/qwen3-tts/run/model_repository}"

log() { echo "[entrypoint-triton] $*" >&2; }
die() { log "error: $*"; exit 64; }

# Compose passes unset variables as empty strings; pydantic would read "" as the path "." instead of None.
for var in QWEN3_TTS_GCS_MODEL_BUCKET GCS_MODEL_BUCKET QWEN3_TTS_CHECKPOINT_DIR; do
  if [[ -z "${!var:-}" ]]; then unset "$var"; fi
done

export QWEN3_TTS_CACHE_DIR="${QWEN3_TTS_CACHE_DIR:-/models}"
bucket="${QWEN3_TTS_GCS_MODEL_BUCKET:-${GCS_MODEL_BUCKET:-}}"

if [[ -n "$bucket" ]]; then
  export QWEN3_TTS_GCS_MODEL_BUCKET="$bucket"
  export QWEN3_TTS_CHECKPOINT_DIR="${QWEN3_TTS_CHECKPOINT_DIR:-$QWEN3_TTS_CACHE_DIR/checkpoints/gcs}"
  log "syncing $bucket into $QWEN3_TTS_CHECKPOINT_DIR"
  "$python_bin" "$here/gcs_sync.py" "$bucket" "$QWEN3_TTS_CHECKPOINT_DIR"
elif [[ -n "${QWEN3_TTS_CHECKPOINT_DIR:-}" ]]; then
  if [[ ! -d "$QWEN3_TTS_CHECKPOINT_DIR" || -z "$(ls -A "$QWEN3_TTS_CHECKPOINT_DIR")" ]]; then
    die "QWEN3_TTS_CHECKPOINT_DIR=$QWEN3_TTS_CHECKPOINT_DIR is missing or empty: mount the model cache" \
      "there or set QWEN3_TTS_GCS_MODEL_BUCKET=gs://bucket/prefix"
  fi
  log "using mounted checkpoints in $QWEN3_TTS_CHECKPOINT_DIR"
else
  # Settings' default checkpoint dir is CACHE/checkpoints/tiny; the command skips complete checkpoints.
  log "no bucket and no QWEN3_TTS_CHECKPOINT_DIR: serving tiny random checkpoints (smoke test only)"
  "$checkpoints_bin" --preset tiny --out "$QWEN3_TTS_CACHE_DIR/checkpoints/tiny"
fi

for var in QWEN3_TTS_TRITON_HTTP_PORT QWEN3_TTS_TRITON_GRPC_PORT QWEN3_TTS_TRITON_METRICS_PORT; do
  # Port 0 ("pick a free one") suits the embedded launcher, not a container whose ports are published.
  [[ "${!var:-1}" =~ ^[1-9][0-9]*$ ]] || die "$var must be a fixed port number, got '${!var}'"
done

# It prints the flags the settings decide (the exit timeout that covers the models' drain).
settings_flags="$("$python_bin" "$here/render_repository.py" "$repo_dir" --check-checkpoints)"
read -r -a settings_args <<< "$settings_flags"

# This container runs one tritonserver, so Python-backend regions already in /dev/shm are a dead one's: a
# server killed (SIGKILL, OOM, the exit timeout) cannot remove them, and in a pod the /dev/shm volume
# outlives the container's restarts, so each crash would take its share of the volume for good.
shm_dir="${SHM_DIR:-/dev/shm}"
stale=("$shm_dir"/triton_python_backend_shm_region_*)
if [[ -e "${stale[0]}" ]]; then
  log "removing ${#stale[@]} shared-memory regions left in $shm_dir by a server that did not stop cleanly"
  rm -f -- "${stale[@]}"
fi

log "starting tritonserver on ${QWEN3_TTS_TRITON_HTTP_PORT:-8000}/${QWEN3_TTS_TRITON_GRPC_PORT:-8001}"
exec "$tritonserver_bin" \
  --model-repository="$repo_dir" \
  --http-port="${QWEN3_TTS_TRITON_HTTP_PORT:-8000}" \
  --grpc-port="${QWEN3_TTS_TRITON_GRPC_PORT:-8001}" \
  --metrics-port="${QWEN3_TTS_TRITON_METRICS_PORT:-8002}" \
  --exit-on-error=true \
  --strict-readiness=true \
  "${settings_args[@]}" \
  "$@"
