#!/usr/bin/env bash
# Check, here on the CPU, that the carried wheels (.whl/) make the GPU machines' image run the benchmark:
# builds a stand-in of that image (CPython 3.12 with torch 2.11, numpy 2, transformers 5 and the other
# packages it is known to have, benchmarks/gpu/wheels.txt's header) in $IMAGE, then runs
# `run.sh all --quick` with it (the engine benchmark, then a short prompt-stall one; tiny checkpoints, CPU).
# A wheel the image lacks shows as a ModuleNotFoundError. ENGINE_TESTS=1 also runs tests/engine under the image's torch, numpy and
# Python (pytest and httpx installed beside it, not into it).
# Needs PyPI and python3.12; the first build downloads about 3 GB (torch's CUDA libraries).
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-/tmp/qwen3-tts-gpu-image}
PYTHON312=${PYTHON312:-python3.12}
if [[ ! -x "$IMAGE/bin/python" ]]; then
    "$PYTHON312" -m venv "$IMAGE"
    "$IMAGE/bin/pip" install -q "torch==2.11.0" "torchaudio==2.11.0" "numpy>=2" "transformers>=5" \
        accelerate scipy numba scikit-learn lazy-loader msgpack safetensors onnxruntime
fi
"$IMAGE/bin/python" -c 'import torch, numpy, transformers; print("image stand-in: torch", torch.__version__,
    "numpy", numpy.__version__, "transformers", transformers.__version__)'
rm -rf "$IMAGE-site"
export PYTHON="$IMAGE/bin/python" SITE="$IMAGE-site" OUT="${OUT:-$IMAGE-out}"
# The device call's own mode: the engine benchmark, then the prompt-stall one (on the CPU, small).
DEVICE=cpu PRESET=tiny CHECKPOINTS=.cache/checkpoints/tiny \
    PROMPT_STALL_ARGS="--streams 2 --clip-seconds 3 --repeats 1" bash benchmarks/gpu/run.sh all --quick "$@"
if [[ "${ENGINE_TESTS:-0}" == 1 ]]; then
    "$PYTHON" -m pip install -q --upgrade --target "$IMAGE-testdeps" pytest hypothesis httpx
    PYTHONPATH="$IMAGE-testdeps:$SITE:$PWD/src:$PWD:$PWD/tests" "$PYTHON" -m pytest -q tests/engine \
        -p no:cacheprovider -W ignore::pytest.PytestConfigWarning
fi
