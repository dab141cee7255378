"""docker/compose.yaml (+ the GPU override): structure, referenced paths, and `docker compose config`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .checks import compose_duration_s, compose_problems, compose_stop_problems, gpu_override_problems
from .helpers import REPO, run

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
GPU = DOCKER / "compose.gpu.yaml"


@pytest.fixture(scope="module")
def files(parse) -> dict[Path, dict]:
    return parse("yaml", COMPOSE, GPU)


def test_compose_structure_and_paths(files) -> None:
    assert compose_problems(files[COMPOSE], DOCKER) == []


def test_compose_details(files) -> None:
    services = files[COMPOSE]["services"]
    assert "/v2/health/ready" in " ".join(services["triton"]["healthcheck"]["test"])
    assert "/health" in " ".join(services["gateway"]["healthcheck"]["test"])
    assert "model-cache" in files[COMPOSE]["volumes"]
    assert any(str(v).startswith("model-cache:") for v in services["triton"]["volumes"])
    assert services["gateway"]["environment"]["QWEN3_TTS_TRITON_HOST"] == "triton"
    # The base file runs anywhere; the GPU reservation lives only in the override.
    assert "deploy" not in services["triton"]


def test_stop_grace_periods_cover_the_drains(files) -> None:
    assert compose_stop_problems(files[COMPOSE], DOCKER) == []


def test_stop_grace_checker_catches_a_short_one(files, tmp_path: Path) -> None:
    assert compose_duration_s("1m30s") == 90 and compose_duration_s(None) == 10 and compose_duration_s(7) == 7
    with pytest.raises(ValueError, match="compose duration"):
        compose_duration_s("90 seconds")
    (tmp_path / "long.env").write_text("QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S=120\n")
    services = {
        # Docker's default 10 s, under Triton's default exit timeout (30 s drain + 10 s unload).
        "triton": {"image": "x:1"},
        # The env_file's 120 s drain outlasts the period.
        "gateway": {"image": "x:1", "env_file": ["long.env"], "stop_grace_period": "60s"},
        # The environment's drains (list form) add up: 10 s gateway + (20 + 10) s Triton + the margin.
        "cpu": {
            "image": "x:1",
            "environment": ["QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S=10", "QWEN3_TTS_TRITON_DRAIN_TIMEOUT_S=20"],
            "stop_grace_period": "44s",
        },
    }
    problems = compose_stop_problems({"services": services}, tmp_path)
    assert [problem.split(":")[0] for problem in problems] == ["triton", "gateway", "cpu"], problems
    services["cpu"]["stop_grace_period"] = "45s"
    assert len(compose_stop_problems({"services": services}, tmp_path)) == 2


def test_gpu_override_reserves_a_gpu(files) -> None:
    assert gpu_override_problems(files[GPU]) == []
    assert gpu_override_problems(files[COMPOSE])  # the checker notices when there is none


def test_compose_checker_catches_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x:1\n")
    bad = {
        "services": {
            "triton": {
                "build": {"context": ".", "dockerfile": "missing.Dockerfile"},
                "volumes": ["cache:/m"],
            },
            "gateway": {
                "build": {"context": "nope"},
                "depends_on": ["triton"],
                "env_file": ["absent.env"],
                "volumes": ["./not-here:/x"],
                "healthcheck": {"test": ["CMD", "true"]},
            },
        }
    }
    problems = "\n".join(compose_problems(bad, tmp_path))
    for expected in (
        "triton: no healthcheck",
        "missing.Dockerfile not found",
        "named volume cache not declared",
        "build context",
        "depends_on is a list",
        "env_file absent.env",
        "mounted path ./not-here",
    ):
        assert expected in problems
    unordered = {
        "services": {
            name: {"image": "x:1", "healthcheck": {"test": ["CMD", "true"]}} for name in ("triton", "gateway")
        }
    }
    assert compose_problems(unordered, tmp_path) == ["gateway does not depend on triton"]


def compose_cmd(tool, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """`docker compose` when the docker CLI is here (compose plugin from the lint venv), else the binary."""
    if shutil.which("docker"):
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(tool("docker-compose"))
        return ["docker", "compose"], {**os.environ, "DOCKER_CONFIG": str(plugins.parent)}
    return [tool("docker-compose")], dict(os.environ)


@pytest.mark.parametrize(
    "args",
    [["-f", str(COMPOSE)], ["-f", str(COMPOSE), "-f", str(GPU)], ["-f", str(COMPOSE), "--profile", "cpu"]],
    ids=["base", "gpu", "cpu-profile"],
)
def test_docker_compose_config_accepts(tool, tmp_path: Path, args: list[str]) -> None:
    cmd, env = compose_cmd(tool, tmp_path)
    proc = run([*cmd, *args, "config", "--quiet"], env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_docker_compose_config_rejects_a_broken_file(tool, tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text(
        "services:\n  gateway:\n    image: x:1\n"
        "    depends_on:\n      triton:\n        condition: service_healthy\n"
    )
    cmd, env = compose_cmd(tool, tmp_path)
    proc = run([*cmd, "-f", str(bad), "config", "--quiet"], env=env, timeout=60)
    assert proc.returncode != 0
    assert "triton" in proc.stderr
