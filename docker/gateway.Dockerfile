# syntax=docker/dockerfile:1
# Gateway image: FastAPI over Triton's gRPC port. Only the gateway's dependencies (no torch, no Triton).
# Build from the repo root:
#   docker build -f docker/gateway.Dockerfile -t qwen3-tts-gateway .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/qwen3-tts/app
COPY docker/requirements-gateway.txt docker/
RUN pip install --no-cache-dir -r docker/requirements-gateway.txt

# The one project distribution holds settings, gateway and client; --no-deps keeps the engine's
# dependencies (torch, qwen-tts) out. Editable, as in the other images, so relative project paths hold.
COPY pyproject.toml README.md ./
COPY src/ src/
COPY gateway/ gateway/
COPY client/ client/
COPY docker/healthcheck.py docker/entrypoint-gateway.sh docker/
RUN pip install --no-cache-dir --no-deps -e .

ENV QWEN3_TTS_CACHE_DIR=/var/lib/qwen3-tts \
    QWEN3_TTS_GATEWAY_HOST=0.0.0.0 \
    QWEN3_TTS_GATEWAY_PORT=8080 \
    QWEN3_TTS_TRITON_HOST=127.0.0.1 \
    QWEN3_TTS_TRITON_GRPC_PORT=8001

# Non-root; the voice library (SQLite by default; QWEN3_TTS_VOICE_DB_URL points replicas at PostgreSQL) lives in
# the cache dir, so that one folder is writable.
RUN useradd --create-home --uid 10001 qwen3tts \
    && mkdir -p /var/lib/qwen3-tts \
    && chown qwen3tts /var/lib/qwen3-tts
# Numeric, so orchestrators can verify runAsNonRoot without reading /etc/passwd.
USER 10001
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "/opt/qwen3-tts/app/docker/healthcheck.py", "http://127.0.0.1:${QWEN3_TTS_GATEWAY_PORT}/health"]

ENTRYPOINT ["/opt/qwen3-tts/app/docker/entrypoint-gateway.sh"]
