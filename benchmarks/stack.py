"""The serving stack under test: Triton from the project's launcher and the gateway, on free ports.

    with serving_stack(settings, work_dir=out / "logs") as stack:
        stack.grpc_url, stack.gateway_url

Triton runs as the launcher runs it for ``qwen3-tts-serve`` (model repository built from the templates,
checkpoints from the settings); the gateway runs as a uvicorn subprocess exactly like ``serve.py`` starts it
(``gateway="subprocess"``), or in a thread of this process (``gateway="thread"``, quicker to start, used by
the tests), or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qwen3_tts_serving.launcher import TritonServer, build_model_repository, ensure_checkpoint_dir
from qwen3_tts_serving.launcher.repository import check_checkpoints
from qwen3_tts_serving.launcher.serve import start_gateway
from qwen3_tts_serving.settings import Settings

logger = logging.getLogger(__name__)

GatewayMode = Literal["subprocess", "thread", "none"]
SYNTHESIS_MODELS = ("custom_voice", "voice_design", "voice_clone")
PROMPT_MODEL = "voice_prompt"


@dataclass
class Stack:
    triton: TritonServer
    settings: Settings
    gateway_url: str | None = None
    gateway_pid: int | None = None  # a gateway subprocess (None in a thread or without a gateway)

    @property
    def grpc_url(self) -> str:
        return self.triton.grpc_url

    @property
    def http_url(self) -> str:
        return self.triton.http_url

    @property
    def metrics_url(self) -> str:
        return self.triton.metrics_url

    @property
    def cpu_pids(self) -> dict[str, int | None]:
        """Processes whose CPU time each level records (Triton with its model stubs, the gateway)."""
        pids = {"triton": self.triton.pid}
        if self.gateway_pid is not None:
            pids["gateway"] = self.gateway_pid
        return pids


def bench_settings(base: Settings | None = None, **overrides: object) -> Settings:
    """``base`` (default: from the environment) with free ports and a checkpoint folder that exists
    (the tiny set is built on first use when QWEN3_TTS_CHECKPOINT_DIR is unset)."""
    settings = base or Settings()
    settings = settings.model_copy(update=overrides)
    checkpoint_dir = ensure_checkpoint_dir(settings)
    return settings.model_copy(
        update={
            "checkpoint_dir": checkpoint_dir,
            "triton_http_port": 0,
            "triton_grpc_port": 0,
            "triton_metrics_port": 0,
            "gateway_port": 0,
        }
    )


def models_to_serve(synthesis_models: Sequence[str]) -> list[str]:
    """The synthesis models asked for, plus ``voice_prompt`` when voice_clone needs a prompt from it."""
    models = list(dict.fromkeys(synthesis_models))
    if "voice_clone" in models and PROMPT_MODEL not in models:
        models.append(PROMPT_MODEL)
    return models


@contextlib.contextmanager
def gateway_thread(settings: Settings, grpc_url: str, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """The gateway app under uvicorn in a daemon thread of this process; yields its base URL."""
    from qwen3_tts_gateway import create_app
    from qwen3_tts_gateway.embedded import serve_in_thread

    gateway_settings = settings.model_copy(update={"gateway_triton_url": grpc_url})
    with serve_in_thread(create_app(settings=gateway_settings), startup_timeout_s=startup_timeout_s) as url:
        yield url


@contextlib.contextmanager
def serving_stack(
    settings: Settings,
    *,
    work_dir: Path,
    models: Sequence[str] = SYNTHESIS_MODELS,
    gateway: GatewayMode = "subprocess",
) -> Iterator[Stack]:
    """Build the model repository, start Triton and the gateway; stop both on exit (also on errors)."""
    served = models_to_serve(models)
    check_checkpoints(settings, served)
    work_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-repo-") as tmp:
        repository = build_model_repository(settings, Path(tmp) / "model_repository", served)
        triton = stack.enter_context(
            TritonServer(repository, settings, log_path=work_dir / "tritonserver.log")
        )
        result = Stack(triton=triton, settings=settings)
        if gateway == "subprocess":
            result.gateway_url, process = start_gateway(settings, triton, stack)
            result.gateway_pid = process.pid
        elif gateway == "thread":
            result.gateway_url = stack.enter_context(gateway_thread(settings, triton.grpc_url))
        logger.info("stack up: Triton %s, gateway %s", triton.grpc_url, result.gateway_url or "(none)")
        yield result
