# syntax=docker/dockerfile:1
# CPU image for local work: `qwen3-tts-serve` (embedded Triton from the nvidia-pytriton wheel + gateway)
# on the tiny random checkpoints, which are built here at image build time.
# Build and run from the repo root:
#   docker build -f docker/cpu.Dockerfile -t qwen3-tts:cpu . && docker run -p 8080:8080 qwen3-tts:cpu
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# sox for qwen-tts; libexpat1 for the pytriton tritonserver binary; libb64-0d for perf_analyzer.
RUN apt-get update \
    && apt-get install -y --no-install-recommends sox libexpat1 libb64-0d libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/qwen3-tts/app
COPY requirements.txt ./
# CPU wheels of torch/torchaudio first: PyPI's default Linux torch is the CUDA build (~5 GB more).
# The later `-r requirements.txt` accepts 2.9.1+cpu for its torch==2.9.1 pin and installs nothing new.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        torch==2.9.1 torchaudio==2.9.1 \
    && pip install --no-cache-dir -r requirements.txt

COPY . .
RUN pip install --no-cache-dir --no-deps -e .

ENV QWEN3_TTS_CACHE_DIR=/var/lib/qwen3-tts \
    QWEN3_TTS_DEVICE=cpu \
    QWEN3_TTS_GATEWAY_HOST=0.0.0.0 \
    QWEN3_TTS_GATEWAY_PORT=8080 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# Tiny checkpoints at build time, so a container starts serving without generating anything.
RUN useradd --create-home --uid 10001 qwen3tts \
    && mkdir -p /var/lib/qwen3-tts \
    && qwen3-tts-checkpoints --preset tiny --out /var/lib/qwen3-tts/checkpoints/tiny \
    && chown -R qwen3tts /var/lib/qwen3-tts
USER 10001
EXPOSE 8080

# All-in-one container: healthy means Triton and every model are ready, which the gateway's /ready says.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python3", "/opt/qwen3-tts/app/docker/healthcheck.py", "http://127.0.0.1:${QWEN3_TTS_GATEWAY_PORT}/ready"]

CMD ["qwen3-tts-serve"]
