#!/usr/bin/env bash
# The in-process engine benchmark on a GPU machine with no internet and no tritonserver (BENCHMARKS.md,
# "GPU engine benchmark (in-process)"): installs the carried wheels (.whl/, from fetch-wheels.sh) into a
# folder put first on PYTHONPATH, then runs `python -m benchmarks.gpu_engine` with the arguments given.
# `run.sh prompt-stall [args]` instead builds the full-size Base checkpoint on the GPU (next to the engine
# benchmark's CustomVoice one) and runs `python -m benchmarks.prompt_stall` on it (issue 16).
# `run.sh all [args]` runs both in one call, the way a lent machine is used: it is handed back 30 s after a
# call and a fresh one costs minutes of the session's 15, so a second call rarely fits. The engine benchmark
# gets a budget of ENGINE_BUDGET_S (default 330 s; args go to it) and is stopped at ENGINE_TIMEOUT_S (default
# the budget + 45 s: a section may overrun its estimate, and results.json is written after each one), then
# the prompt-stall one runs under `timeout PROMPT_STALL_S` (default 130 s; its args in PROMPT_STALL_ARGS):
# at most about 520 s with the wheels installed twice, inside the recipe's 540 s. Their logs are log and
# log-prompt-stall beside the results. The exit status is the first failure's.
# Results go to $OUT when it is set (the device machine's folder that comes back), else bench-results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ "${1:-}" == "all" ]]; then
    shift
    logs=${OUT:-bench-results}
    mkdir -p "$logs"
    status=0
    budget=${ENGINE_BUDGET_S:-330}
    timeout "${ENGINE_TIMEOUT_S:-$((budget + 45))}" bash "$0" --budget-s "$budget" "$@" 2>&1 | tee "$logs/log" \
        || status=$?
    # shellcheck disable=SC2086  # PROMPT_STALL_ARGS is a list of arguments
    timeout "${PROMPT_STALL_S:-130}" bash "$0" prompt-stall ${PROMPT_STALL_ARGS:-} 2>&1 \
        | tee "$logs/log-prompt-stall" || { code=$?; status=$((status ? status : code)); }
    exit "$status"
fi
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
