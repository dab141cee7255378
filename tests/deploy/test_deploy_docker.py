"""Dockerfiles, image requirements and start scripts: hadolint, shellcheck and the project's own rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from qwen3_tts_client._core import ENV_API_KEY, ENV_BASE_URL
from qwen3_tts_client.settings import ProviderSettings
from qwen3_tts_client.triton import ENV_TRITON_URL

from qwen3_tts_serving.checkpoints.reference import ENV_VAR as REFERENCE_CONFIGS_ENV
from qwen3_tts_serving.settings import Settings

from .checks import (
    dockerfile_base_images,
    dockerfile_problems,
    image_ref_problems,
    missing_image_distributions,
    package_modules,
    requirement_specs,
    start_script_problems,
    third_party_imports,
    unknown_setting_names,
    unpinned_requirements,
)
from .helpers import REPO, run

DOCKER = REPO / "docker"
DOCKERFILES = ["triton-gpu.Dockerfile", "gateway.Dockerfile", "cpu.Dockerfile"]
# NGC tritonserver release -> Triton version inside (NVIDIA's release notes); extend when bumping.
TRITON_RELEASES = {
    "24.08": "2.49.0",
    "24.09": "2.50.0",
    "24.10": "2.51.0",
    "24.11": "2.52.0",
    "24.12": "2.53.0",
}


def read(name: str) -> str:
    return (DOCKER / name).read_text(encoding="utf-8")


def project_pins() -> dict[str, str]:
    return requirement_specs((REPO / "requirements.txt").read_text(encoding="utf-8"))


def hadolint(tool, *files: Path) -> tuple[int, str]:
    proc = run([tool("hadolint"), "--no-color", "--config", str(DOCKER / "hadolint.yaml"), *map(str, files)])
    return proc.returncode, proc.stdout + proc.stderr


def test_hadolint_passes_on_every_dockerfile(tool) -> None:
    code, out = hadolint(tool, *(DOCKER / name for name in DOCKERFILES))
    assert code == 0, out


def test_hadolint_fails_on_a_bad_dockerfile(tool, tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu\nRUN cd /tmp && make\n")
    code, out = hadolint(tool, bad)
    assert code != 0
    assert "DL3006" in out  # untagged base image
    assert "DL3003" in out  # cd instead of WORKDIR


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_rules(name: str) -> None:
    assert dockerfile_base_images(read(name)), f"{name}: no FROM"
    assert dockerfile_problems(read(name)) == []


def test_dockerfile_rules_catch_a_bad_dockerfile() -> None:
    bad = (
        "ARG BASE=python:latest\nFROM ${BASE} AS build\nRUN git clone https://example.invalid/x\nFROM build\n"
    )
    problems = dockerfile_problems(bad)
    assert any("latest" in p for p in problems)
    assert any("HEALTHCHECK" in p for p in problems)
    assert any("root" in p for p in problems)
    assert any("clones" in p for p in problems)
    # A USER in a build stage does not make the final stage non-root.
    staged = "FROM a:1 AS b\nUSER 1000\nFROM c:1\nHEALTHCHECK NONE\n"
    assert any("root" in p for p in dockerfile_problems(staged))


def test_base_images_resolve_args_and_skip_stage_names() -> None:
    text = (
        'ARG BASE="python:3.11-slim"\nFROM ${BASE} AS build\n'
        + "FROM --platform=linux/amd64 build\nFROM nginx:1.27\n"
    )
    assert dockerfile_base_images(text) == ["python:3.11-slim", "nginx:1.27"]


@pytest.mark.parametrize(
    "ref",
    [
        "python",
        "python:latest",
        "nvcr.io/nvidia/tritonserver",
        "localhost:5000/img",
        "img:1@sha256:PLACEHOLDER",
        "${BASE}",
    ],
)
def test_image_ref_checker_rejects(ref: str) -> None:
    assert image_ref_problems(ref)


@pytest.mark.parametrize(
    "ref", ["python:3.11.13-slim-bookworm", "localhost:5000/img:1.0", "img:1@sha256:" + "a" * 64]
)
def test_image_ref_checker_accepts(ref: str) -> None:
    assert image_ref_problems(ref) == []


def test_triton_image_matches_tritonclient_and_torch() -> None:
    text = read("triton-gpu.Dockerfile")
    triton = [i for i in dockerfile_base_images(text) if "tritonserver" in i]
    assert len(triton) == 1, triton
    release = re.search(r":(\d\d\.\d\d)-py3", triton[0])
    assert release, f"{triton[0]}: expected a <yy.mm>-py3 tag"
    assert project_pins()["tritonclient"] == f"=={TRITON_RELEASES[release.group(1)]}", (
        "server and client differ"
    )
    # flash-attn is compiled against the torch the runtime installs: same version in both places.
    torch_arg = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.M)
    assert torch_arg and project_pins()["torch"] == f"=={torch_arg.group(1)}"
    assert re.search(r"^ARG FLASH_ATTN_VERSION=\d+\.\d+\.\d+$", text, re.M)
    assert "--no-build-isolation" in text


def test_triton_image_wiring() -> None:
    text = read("triton-gpu.Dockerfile")
    assert "/v2/health/ready" in text
    assert "entrypoint-triton.sh" in text and (DOCKER / "entrypoint-triton.sh").is_file()
    assert "render_repository.py" in text
    # Templates are filled by the project's code, never by sed.
    assert not re.search(r"\bsed\b", text + read("entrypoint-triton.sh"))
    assert "requirements-gcs.txt" in text


def test_gateway_image_installs_only_gateway_deps() -> None:
    text = read("gateway.Dockerfile")
    installs = re.findall(r"pip install[^\n]*", text)
    assert any("requirements-gateway.txt" in line for line in installs)
    assert not any(re.search(r"-r requirements\.txt", line) for line in installs)
    assert any("--no-deps" in line for line in installs)
    assert "/health" in text
    assert dockerfile_base_images(text)[0].startswith("python:") and "slim" in dockerfile_base_images(text)[0]


def test_gateway_requirements_match_project_pins() -> None:
    gateway = requirement_specs(read("requirements-gateway.txt"))
    pins = project_pins()
    wanted = {
        "fastapi",
        "uvicorn",
        "tritonclient",
        "soundfile",
        "pydantic-settings",
        "httpx",
        "prometheus-client",
    }
    assert wanted <= gateway.keys()
    assert not {"torch", "torchaudio", "qwen-tts", "transformers", "nvidia-pytriton"} & gateway.keys()
    for name, spec in gateway.items():
        if name not in pins:
            continue
        if pins[name].startswith("=="):
            assert spec == pins[name], f"{name}: gateway {spec} != requirements.txt {pins[name]}"
        else:
            assert spec.removeprefix("==") in SpecifierSet(pins[name]), f"{name}: {spec} outside {pins[name]}"


# The project packages the gateway image installs (pip install -e . --no-deps), by top-level name.
PROJECT_SOURCES = {
    "qwen3_tts_gateway": REPO / "gateway" / "qwen3_tts_gateway",
    "qwen3_tts_serving": REPO / "src" / "qwen3_tts_serving",
    "qwen3_tts_client": REPO / "client" / "qwen3_tts_client",
}


def test_gateway_image_installs_every_module_the_gateway_imports() -> None:
    # What the image runs (uvicorn's app factory, Alembic's environment and migrations) and every project
    # module they import: a module whose distribution requirements-gateway.txt does not bring stops the
    # gateway with ModuleNotFoundError at its first start.
    migrations = PROJECT_SOURCES["qwen3_tts_gateway"] / "alembic"
    entry_points = [
        "qwen3_tts_gateway.app",
        "qwen3_tts_gateway.alembic.env",
        *package_modules(migrations / "versions", "qwen3_tts_gateway.alembic.versions"),
    ]
    imports = third_party_imports(entry_points, PROJECT_SOURCES)
    assert "qwen3_tts_gateway.alembic.env" in imports["alembic"]
    assert {"fastapi", "tritonclient", "sqlalchemy", "scipy"} <= imports.keys()
    assert not {"torch", "qwen_tts"} & imports.keys(), "the gateway must not import the engine's packages"
    assert missing_image_distributions(imports, read("requirements-gateway.txt")) == []


def test_missing_image_distribution_is_caught() -> None:
    imports = {"scipy": {"qwen3_tts_gateway.refaudio"}, "grpc": {"qwen3_tts_gateway.backend.triton"}}
    without_scipy = "\n".join(
        line for line in read("requirements-gateway.txt").splitlines() if not line.startswith("scipy")
    )
    problems = missing_image_distributions(imports, without_scipy)
    # grpc comes in through tritonclient[grpc] (an extra's dependency), scipy from nothing.
    assert len(problems) == 1 and problems[0].startswith("scipy (imported by qwen3_tts_gateway.refaudio)")
    assert missing_image_distributions({"not_a_module_anywhere": {"x"}}, "") == [
        "not_a_module_anywhere (imported by x): no installed distribution provides it"
    ]


def known_setting_names() -> set[str]:
    """Every QWEN3_TTS_* variable the project reads: Settings, the client's and the checkpoint builder's."""
    prefix = Settings.model_config["env_prefix"]
    provider = ProviderSettings.model_config["env_prefix"]
    return {
        *(f"{prefix}{name}".upper() for name in Settings.model_fields),
        *(f"{provider}{name}".upper() for name in ProviderSettings.model_fields),
        ENV_BASE_URL,
        ENV_API_KEY,
        ENV_TRITON_URL,
        REFERENCE_CONFIGS_ENV,
    }


def test_deploy_files_name_only_real_settings() -> None:
    files = [
        path
        for folder in ("docker", "k8s", "terraform")
        for path in sorted((REPO / folder).rglob("*"))
        if path.is_file() and path.suffix not in (".lock", ".tfstate") and ".terraform" not in path.parts
    ]
    texts = {path.relative_to(REPO): path.read_text(encoding="utf-8") for path in files}
    assert any("QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S" in text for text in texts.values())
    assert unknown_setting_names(texts, known_setting_names()) == []


def test_unknown_setting_names_are_caught() -> None:
    texts = {Path("k8s/settings.env"): "QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT=30\nQWEN3_TTS_MAX_ACTIVE_STREAMS=8\n"}
    assert unknown_setting_names(texts, known_setting_names()) == [
        "k8s/settings.env: QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT is not a setting (misspelt or retired?)"
    ]


@pytest.mark.parametrize(
    "name",
    [
        "requirements-deploy-lint.txt",
        "requirements-hcl2.txt",
        "requirements-gcs.txt",
        "requirements-gateway.txt",
    ],
)
def test_docker_requirements_are_exactly_pinned(name: str) -> None:
    assert unpinned_requirements(read(name)) == []


def test_pin_checker_catches_loose_pins() -> None:
    assert len(unpinned_requirements("foo>=1\nbar\nbaz[x]==2.0\n")) == 2


def test_cpu_image_builds_tiny_checkpoints_and_serves() -> None:
    text = read("cpu.Dockerfile")
    assert re.search(r"^RUN .*qwen3-tts-checkpoints", re.sub(r"\\\n", " ", text), re.M)
    assert re.search(r'^CMD \["qwen3-tts-serve"\]', text, re.M)


@pytest.mark.parametrize("name", ["entrypoint-triton.sh", "entrypoint-gateway.sh"])
def test_start_scripts_install_nothing(name: str) -> None:
    assert start_script_problems(read(name)) == []


def test_start_script_rule_catches_installs() -> None:
    assert start_script_problems("pip install foo\ngit clone x\n")


def test_shellcheck_passes_on_start_scripts(tool) -> None:
    proc = run([tool("shellcheck"), *map(str, sorted(DOCKER.glob("*.sh")))])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_fails_on_a_bad_script(tool, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nrm -rf $1/*\n")
    proc = run([tool("shellcheck"), str(bad)])
    assert proc.returncode != 0 and "SC2086" in proc.stdout


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".venv-*", ".cache", "*.egg-info"} <= patterns
    for needed in (
        "README.md",
        "pyproject.toml",
        "requirements.txt",
        "src",
        "gateway",
        "client",
        "docker",
        "model_repository",
    ):
        assert needed not in patterns, f"{needed} is needed in the build context"
