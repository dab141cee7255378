"""docker/entrypoint-triton.sh with stand-ins for python3, tritonserver and qwen3-tts-checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import REPO, run

ENTRYPOINT = REPO / "docker" / "entrypoint-triton.sh"

FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$LOG"
if [[ "$1" == *gcs_sync.py && -n "${FAIL_SYNC:-}" ]]; then exit 1; fi
if [[ "$1" == *render_repository.py ]]; then echo "--exit-timeout-secs=42"; fi
"""
FAKE_TRITON = """#!/usr/bin/env bash
echo "tritonserver $*" >> "$LOG"
echo "env ckpt=${QWEN3_TTS_CHECKPOINT_DIR-<unset>} bucket=${QWEN3_TTS_GCS_MODEL_BUCKET-<unset>}" >> "$LOG"
"""
FAKE_CHECKPOINTS = """#!/usr/bin/env bash
echo "checkpoints $*" >> "$LOG"
"""


@pytest.fixture
def start(tmp_path: Path):
    fakes = {"python": FAKE_PYTHON, "tritonserver": FAKE_TRITON, "checkpoints": FAKE_CHECKPOINTS}
    for name, body in fakes.items():
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)
    log = tmp_path / "calls.log"

    def go(*args: str, **env: str) -> tuple[int, str, list[str]]:
        base = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "LOG": str(log),
            "PYTHON_BIN": str(tmp_path / "python"),
            "TRITONSERVER_BIN": str(tmp_path / "tritonserver"),
            "CHECKPOINTS_BIN": str(tmp_path / "checkpoints"),
            "TRITON_MODEL_REPOSITORY": str(tmp_path / "repo"),
            "QWEN3_TTS_CACHE_DIR": str(tmp_path / "cache"),
            "SHM_DIR": str(tmp_path / "shm"),
        }
        proc = run(["bash", str(ENTRYPOINT), *args], env={**base, **env}, timeout=30)
        calls = log.read_text().splitlines() if log.exists() else []
        return proc.returncode, proc.stderr, calls

    return go


def test_bucket_is_synced_then_triton_starts(start, tmp_path: Path) -> None:
    code, err, calls = start(QWEN3_TTS_GCS_MODEL_BUCKET="gs://weights/qwen3-tts")
    assert code == 0, err
    ckpt = tmp_path / "cache" / "checkpoints" / "gcs"
    assert calls[0] == f"python {REPO}/docker/gcs_sync.py gs://weights/qwen3-tts {ckpt}"
    assert calls[1] == f"python {REPO}/docker/render_repository.py {tmp_path / 'repo'} --check-checkpoints"
    assert calls[2].startswith(
        f"tritonserver --model-repository={tmp_path / 'repo'} --http-port=8000 --grpc-port=8001"
    )
    assert calls[3] == f"env ckpt={ckpt} bucket=gs://weights/qwen3-tts"


def test_short_bucket_variable_is_accepted(start) -> None:
    code, err, calls = start(GCS_MODEL_BUCKET="gs://weights/p", QWEN3_TTS_CHECKPOINT_DIR="/somewhere")
    assert code == 0, err
    assert calls[0].endswith("gcs_sync.py gs://weights/p /somewhere")
    assert calls[-1] == "env ckpt=/somewhere bucket=gs://weights/p"


def test_failed_sync_does_not_start_triton(start) -> None:
    code, _, calls = start(QWEN3_TTS_GCS_MODEL_BUCKET="gs://weights/p", FAIL_SYNC="1")
    assert code != 0
    assert not any(c.startswith("tritonserver") for c in calls)


def test_mounted_cache_is_used_as_is(start, tmp_path: Path) -> None:
    ckpt = tmp_path / "mounted"
    (ckpt / "custom_voice").mkdir(parents=True)
    code, err, calls = start(QWEN3_TTS_CHECKPOINT_DIR=str(ckpt))
    assert code == 0, err
    assert not any("gcs_sync" in c or c.startswith("checkpoints") for c in calls)
    assert calls[-1] == f"env ckpt={ckpt} bucket=<unset>"


@pytest.mark.parametrize("make_dir", [True, False])
def test_empty_or_missing_mounted_cache_fails_clearly(start, tmp_path: Path, make_dir: bool) -> None:
    ckpt = tmp_path / "empty"
    if make_dir:
        ckpt.mkdir()
    code, err, calls = start(QWEN3_TTS_CHECKPOINT_DIR=str(ckpt))
    assert code == 64
    assert "missing or empty" in err and "QWEN3_TTS_GCS_MODEL_BUCKET" in err
    assert calls == []


def test_nothing_configured_serves_tiny_checkpoints(start, tmp_path: Path) -> None:
    # Compose passes unset variables as empty strings; they must count as unset.
    code, err, calls = start(QWEN3_TTS_CHECKPOINT_DIR="", QWEN3_TTS_GCS_MODEL_BUCKET="")
    assert code == 0, err
    assert calls[0] == f"checkpoints --preset tiny --out {tmp_path / 'cache' / 'checkpoints' / 'tiny'}"
    assert calls[-1] == "env ckpt=<unset> bucket=<unset>"


def test_ports_and_extra_arguments_reach_tritonserver(start) -> None:
    code, err, calls = start(
        "--log-verbose=1",
        QWEN3_TTS_TRITON_HTTP_PORT="9000",
        QWEN3_TTS_TRITON_GRPC_PORT="9001",
        QWEN3_TTS_TRITON_METRICS_PORT="9002",
    )
    assert code == 0, err
    triton = next(c for c in calls if c.startswith("tritonserver"))
    flags = ("--http-port=9000", "--grpc-port=9001", "--metrics-port=9002", "--log-verbose=1")
    for flag in (*flags, "--exit-timeout-secs=42"):  # the last: what render_repository.py printed
        assert flag in triton.split()


def test_port_zero_is_rejected(start) -> None:
    code, err, calls = start(QWEN3_TTS_TRITON_GRPC_PORT="0")
    assert code == 64 and "QWEN3_TTS_TRITON_GRPC_PORT" in err
    assert not any(c.startswith("tritonserver") for c in calls)


def test_shared_memory_a_dead_server_left_is_removed_before_triton_starts(start, tmp_path: Path) -> None:
    """In a pod /dev/shm outlives the container's restarts: a killed server's regions would pile up there."""
    shm = tmp_path / "shm"
    shm.mkdir()
    stale = [shm / f"triton_python_backend_shm_region_{n}" for n in range(3)]
    other = shm / "someone-elses-segment"
    for path in (*stale, other):
        path.write_bytes(b"x")
    code, err, calls = start()
    assert code == 0, err
    assert not any(path.exists() for path in stale) and other.exists()
    assert "removing 3 shared-memory regions" in err
    code, err, _ = start()  # none left: nothing to say
    assert code == 0 and "shared-memory" not in err, err
