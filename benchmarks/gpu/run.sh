#!/usr/bin/env bash
# The in-process engine benchmark on a GPU machine with no internet and no tritonserver (BENCHMARKS.md,
# "GPU engine benchmark (in-process)"): installs the carried wheels (.whl/, from fetch-wheels.sh) into a
# folder put first on PYTHONPATH, then runs `python -m benchmarks.gpu_engine` with the arguments given.
# `run.sh prompt-stall [args]` instead builds the full-size Base checkpoint on the GPU (next to the engine
# benchmark's CustomVoice one) and runs `python -m benchmarks.prompt_stall` on it (issue 16).
# Results go to $OUT when it is set (the device machine's folder that comes back), else bench-results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/qwen3-tts-site}
PYTHON=${PYTHON:-python3}
if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "no wheels in $WHEELS: run benchmarks/gpu/fetch-wheels.sh where PyPI is reachable, and carry $WHEELS" >&2
    exit 2
fi
"$PYTHON" -m pip install -q --root-user-action=ignore --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [[ "${1:-}" == "prompt-stall" ]]; then
    shift
    DEVICE=${DEVICE:-cuda}
    PRESET=${PRESET:-full-1.7b}
    CHECKPOINTS=${CHECKPOINTS:-.cache/checkpoints/$PRESET-${DEVICE%%:*}}
    "$PYTHON" -m qwen3_tts_serving.checkpoints.cli --preset "$PRESET" --device "$DEVICE" --flavours base \
        --out "$CHECKPOINTS"
    results=${OUT:-bench-results}
    mkdir -p "$results"
    exec "$PYTHON" -m benchmarks.prompt_stall --checkpoint-dir "$CHECKPOINTS/base" --device "$DEVICE" \
        --streams 8 --out "$results/prompt_stall.json" "$@"
fi
out=()
if [[ -n "${OUT:-}" ]]; then
    out=(--out "$OUT")
fi
exec "$PYTHON" -m benchmarks.gpu_engine "${out[@]}" "$@"
