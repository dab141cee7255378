#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu/run.sh installs on a GPU machine (which has no internet) into
# .whl/ (git-ignored): run it here, where PyPI is reachable. The pins are in benchmarks/gpu/wheels.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$WHEELS"
binary=()
source_only=()
while read -r pin; do
    case $pin in
        "" | "#"*) ;;
        sox==*) source_only+=("$pin") ;;  # published as a source archive only
        *) binary+=("$pin") ;;
    esac
done <benchmarks/gpu/wheels.txt
# The GPU machines run CPython 3.12 on x86-64 Linux; these are the tags their pip accepts.
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" "${binary[@]}"
# sox is pure Python: a wheel built here installs there.
"$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" "${source_only[@]}"
ls -l "$WHEELS"
du -sh "$WHEELS"
