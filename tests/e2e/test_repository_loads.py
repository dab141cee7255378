"""A real tritonserver loads every template of the project once filled (throwaway models that check their
parameters at load time): the configs it reports match the built files. The build's unit tests are in
tests/unit/test_repository.py."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from unit.repository_helpers import ALL_MODELS, ENGINE_PARAMETERS, TEMPLATES, _parse, _settings

from qwen3_tts_serving.contract import CHECKPOINTS
from qwen3_tts_serving.launcher.repository import MODEL_REPOSITORY, TEMPLATE_NAME, build_model_repository
from qwen3_tts_serving.launcher.triton import TritonServer

# The throwaway model checks at load time that Triton handed it every parameter, filled.
_CHECK_PARAMETERS = """
parameters = {key: value["string_value"] for key, value in self.config["parameters"].items()}
unfilled = sorted(key for key, value in parameters.items() if not value or "${" in value)
if unfilled:
    raise RuntimeError(f"unfilled parameters: {unfilled}")
"""


@pytest.mark.e2e
def test_tritonserver_loads_every_filled_template(
    tmp_path: Path, checkpoints: Path, write_python_model: Callable[..., Path]
) -> None:
    source = tmp_path / "source"
    for model in TEMPLATES:
        write_python_model(source / model, initialize=_CHECK_PARAMETERS, with_config=False)
        shutil.copy(MODEL_REPOSITORY / model / TEMPLATE_NAME, source / model / TEMPLATE_NAME)
    settings = _settings(
        tmp_path,
        checkpoints,
        device="cpu",
        triton_http_port=0,
        triton_grpc_port=0,
        triton_metrics_port=0,
        engines_per_checkpoint=2,
    )
    out = build_model_repository(settings, tmp_path / "build", source=source)
    engines = [f"{checkpoint}_engine_{index}" for checkpoint in CHECKPOINTS for index in (0, 1)]
    with TritonServer(out, settings, log_path=tmp_path / "triton.log") as server:
        for model in [*ALL_MODELS, *engines]:
            config = httpx.get(f"{server.http_url}/v2/models/{model}/config").json()
            decoupled = config.get("model_transaction_policy", {}).get("decoupled", False)
            assert decoupled is _parse(out / model / "config.pbtxt").model_transaction_policy.decoupled
            assert config["max_batch_size"] == settings.max_entry_batch
            assert config["instance_group"][0]["kind"] == "KIND_CPU"
            wanted = ENGINE_PARAMETERS if model in engines else {"engines", "drain_timeout_s"}
            assert set(config["parameters"]) >= wanted
