#!/usr/bin/env bash
# Start-up of the gateway image. Cloud Run injects PORT for the ingress container; it wins over the
# project setting so the container listens where the platform sends traffic.
set -euo pipefail

port="${PORT:-${QWEN3_TTS_GATEWAY_PORT:-8080}}"
export QWEN3_TTS_GATEWAY_PORT="$port"

exec uvicorn qwen3_tts_gateway.app:create_app --factory \
  --host "${QWEN3_TTS_GATEWAY_HOST:-0.0.0.0}" \
  --port "$port" \
  --proxy-headers \
  --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-*}" \
  "$@"
