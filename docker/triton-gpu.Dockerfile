# syntax=docker/dockerfile:1
# GPU Triton image: NGC tritonserver 24.10 (Triton 2.51.0, the server that matches tritonclient 2.51.0),
# the project, qwen-tts and a flash-attn wheel compiled against the same torch and CUDA.
# Build from the repo root:
#   docker build -f docker/triton-gpu.Dockerfile -t qwen3-tts-triton:gpu .
# Base images are pinned by tag; see docker/README.md for the digest policy.

# ---- stage 1: flash-attn, compiled against the exact torch the runtime stage installs ------------------
# torch 2.9.1 from PyPI is the CUDA 12.8 build, so nvcc is 12.8 too. Ubuntu 22.04 gives the same glibc
# (2.35) and Python (3.10) as the Triton 24.10 image, so the wheel runs there unchanged.
FROM nvidia/cuda:12.8.1-devel-ubuntu22.04 AS flash-attn

ARG TORCH_VERSION=2.9.1
ARG FLASH_ATTN_VERSION=2.8.3
# sm_80 kernels also run on sm_86/sm_89 (L4); sm_90 is the H100. Each extra arch adds ~an hour of nvcc.
ARG FLASH_ATTN_CUDA_ARCHS="80;90"
ARG MAX_JOBS=8

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m pip install --no-cache-dir "torch==${TORCH_VERSION}" \
    packaging==25.0 ninja==1.13.0 psutil==7.1.0 setuptools==80.9.0 wheel==0.45.1
# FORCE_BUILD: compile here instead of fetching a prebuilt wheel that may target another torch ABI.
ENV FLASH_ATTENTION_FORCE_BUILD=TRUE \
    FLASH_ATTN_CUDA_ARCHS=${FLASH_ATTN_CUDA_ARCHS} \
    MAX_JOBS=${MAX_JOBS} \
    NVCC_THREADS=2
RUN python3 -m pip wheel --no-cache-dir --no-build-isolation --no-deps \
    "flash-attn==${FLASH_ATTN_VERSION}" -w /wheels

# ---- stage 2: runtime --------------------------------------------------------------------------------
FROM nvcr.io/nvidia/tritonserver:24.10-py3

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# sox: qwen-tts imports the `sox` package, which shells out to the binary.
RUN apt-get update \
    && apt-get install -y --no-install-recommends sox libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/qwen3-tts/app
# Dependencies before the source, so code edits reuse this (large) layer. One resolver pass over the
# project's pins and the GCS client, as requirements.txt asks.
COPY requirements.txt ./
COPY docker/requirements-gcs.txt docker/
RUN python3 -m pip install --no-cache-dir -r requirements.txt -r docker/requirements-gcs.txt

COPY --from=flash-attn /wheels /tmp/wheels
RUN python3 -m pip install --no-cache-dir --no-deps /tmp/wheels/flash_attn-*.whl \
    && rm -rf /tmp/wheels \
    && python3 -c "import flash_attn, torch; print('flash-attn', flash_attn.__version__, 'torch', torch.__version__)"

# The source tree stays at /opt/qwen3-tts/app and is installed editable, so the project finds
# model_repository/ and its other files relative to the checkout, exactly as in development.
COPY . .
RUN python3 -m pip install --no-cache-dir --no-deps -e .

ENV QWEN3_TTS_CACHE_DIR=/models \
    QWEN3_TTS_DEVICE=auto \
    QWEN3_TTS_TRITON_HTTP_PORT=8000 \
    QWEN3_TTS_TRITON_GRPC_PORT=8001 \
    QWEN3_TTS_TRITON_METRICS_PORT=8002 \
    TRITON_MODEL_REPOSITORY=/opt/qwen3-tts/run/model_repository \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1

# Bake a filled model repository (and prove the templates fill); the entrypoint refills it at start.
RUN useradd --create-home --uid 10001 qwen3tts \
    && mkdir -p /models /opt/qwen3-tts/run \
    && python3 docker/render_repository.py "$TRITON_MODEL_REPOSITORY" \
    && chown -R qwen3tts /models /opt/qwen3-tts/run
USER 10001
VOLUME ["/models"]
EXPOSE 8000 8001 8002

# Long start period: weights are synced and three models loaded before Triton reports ready.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "/opt/qwen3-tts/app/docker/healthcheck.py", "http://127.0.0.1:${QWEN3_TTS_TRITON_HTTP_PORT}/v2/health/ready"]

# NVIDIA's entrypoint first: it enables the CUDA forward-compatibility libraries on older drivers
# (Cloud Run's L4 driver is R535 / CUDA 12.2).
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "/opt/qwen3-tts/app/docker/entrypoint-triton.sh"]
