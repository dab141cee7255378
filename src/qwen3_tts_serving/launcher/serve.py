"""``qwen3-tts-serve``: checkpoints, model repository, Triton and the gateway with one command.

Without QWEN3_TTS_CHECKPOINT_DIR it serves tiny random checkpoints on the CPU (built on first use); with it,
the same command serves real checkpoints, on the GPU when there is one. Ctrl-C or SIGTERM stops everything.
A tritonserver that dies is restarted (QWEN3_TTS_TRITON_RESTART_*) while the gateway keeps answering.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import sys
import time
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from qwen3_tts_serving.contract import MODEL_CHECKPOINTS
from qwen3_tts_serving.launcher.process import (
    ManagedProcess,
    StartupError,
    connect_host,
    exit_description,
    free_ports,
    http_ok,
)
from qwen3_tts_serving.launcher.repository import (
    build_model_repository,
    check_serving_setup,
    discover_models,
    ensure_checkpoint_dir,
)
from qwen3_tts_serving.launcher.supervisor import RestartPolicy, Supervisor
from qwen3_tts_serving.launcher.triton import STOP_MARGIN_S, TritonServer
from qwen3_tts_serving.settings import Settings, describe_settings_error, get_settings

logger = logging.getLogger("qwen3_tts_serving.serve")

GATEWAY_APP = "qwen3_tts_gateway.app:create_app"
WATCHDOG_INTERVAL_S = 1.0


class Shutdown(Exception):
    """Raised by the signal handler so that every ``with`` block unwinds and stops its process."""


class ServeError(RuntimeError):
    pass


def _raise_shutdown(signum: int, frame: types.FrameType | None) -> None:
    # A second Ctrl-C must not interrupt the clean-up that the first one started.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise Shutdown(signal.Signals(signum).name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qwen3-tts-serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        choices=list(MODEL_CHECKPOINTS),
        help=f"serve only these (default: all in model_repository/): {', '.join(MODEL_CHECKPOINTS)}",
    )
    parser.add_argument("--no-gateway", action="store_true", help="run Triton only")
    parser.add_argument("--repository-dir", type=Path, help="build dir (default: CACHE/model_repository)")
    return parser.parse_args(argv)


def gateway_env(settings: Settings, triton: TritonServer, port: int) -> dict[str, str]:
    """The gateway reads its Settings from the environment: point it at the Triton that actually runs."""
    ports = triton.ports
    if ports is None:
        raise RuntimeError("tritonserver is not running")
    env = dict(os.environ)
    env.update(
        {
            "QWEN3_TTS_TRITON_HOST": triton.host,
            "QWEN3_TTS_TRITON_HTTP_PORT": str(ports.http),
            "QWEN3_TTS_TRITON_GRPC_PORT": str(ports.grpc),
            "QWEN3_TTS_TRITON_METRICS_PORT": str(ports.metrics),
            "QWEN3_TTS_GATEWAY_TRITON_URL": triton.grpc_url,
            "QWEN3_TTS_GATEWAY_HOST": settings.gateway_host,
            "QWEN3_TTS_GATEWAY_PORT": str(port),
        }
    )
    return env


def start_gateway(
    settings: Settings, triton: TritonServer, stack: contextlib.ExitStack
) -> tuple[str, ManagedProcess]:
    """Start uvicorn with the gateway app (stopped by ``stack``); return its URL and process once up."""
    if importlib.util.find_spec("qwen3_tts_gateway.app") is None:
        raise ServeError("the gateway (qwen3_tts_gateway.app) is not installed; use --no-gateway")
    port = settings.gateway_port or free_ports(1, settings.gateway_host)[0]
    url = f"http://{connect_host(settings.gateway_host)}:{port}"
    cmd = [sys.executable, "-m", "uvicorn", GATEWAY_APP, "--factory", "--host", settings.gateway_host]
    gateway = ManagedProcess(
        "gateway",
        [*cmd, "--port", str(port)],
        env=gateway_env(settings, triton, port),
        log_path=triton.log_path.with_name(triton.log_path.name.replace("tritonserver", "gateway", 1)),
        # SIGTERM drains the gateway's open streams first (gateway_drain_timeout_s).
        stop_timeout_s=settings.gateway_drain_timeout_s + STOP_MARGIN_S,
    )
    stack.callback(gateway.stop)
    gateway.start()
    gateway.wait_until(lambda: http_ok(f"{url}/health"), settings.gateway_startup_timeout_s)
    return url, gateway


def banner(triton: TritonServer, gateway: tuple[str, ManagedProcess] | None) -> list[str]:
    lines = [
        "Qwen3-TTS is being served (Ctrl-C stops it):",
        f"  Triton HTTP     {triton.http_url}",
        f"  Triton gRPC     {triton.grpc_url}",
        f"  Triton metrics  {triton.metrics_url}",
    ]
    if gateway:
        url, process = gateway
        lines += [f"  Gateway         {url}", f"  API docs        {url}/docs"]
        lines.append(f"  Gateway log     {process.log_path}")
    lines.append(f"  Triton log      {triton.log_path}")
    return lines


def _wait_for_exit(
    watched: Mapping[str, ManagedProcess | TritonServer], supervisors: Sequence[Supervisor] = ()
) -> int:
    """Block until a signal arrives (an exception), a watched child dies or a supervised one is given up
    (return 1). Supervised children that die are restarted meanwhile (see :mod:`.supervisor`)."""
    while True:
        for name, process in watched.items():
            if not process.is_running:
                logger.error(
                    "%s %s; last log lines:\n%s",
                    name,
                    exit_description(process.returncode),
                    process.log_tail(),
                )
                return 1
        if not all(supervisor.check() for supervisor in supervisors):
            return 1
        time.sleep(WATCHDOG_INTERVAL_S)


def serve(settings: Settings, args: argparse.Namespace) -> int:
    checkpoint_dir = ensure_checkpoint_dir(settings)
    settings = settings.model_copy(update={"checkpoint_dir": checkpoint_dir})
    models = args.models or discover_models()
    try:
        check_serving_setup(settings, models)
    except ValueError as error:
        raise ServeError(str(error)) from None
    out_dir = args.repository_dir or settings.cache_dir / "model_repository"
    repository = build_model_repository(settings, out_dir, models)
    with contextlib.ExitStack() as stack:
        triton = stack.enter_context(TritonServer(repository, settings))
        gateway = None if args.no_gateway else start_gateway(settings, triton, stack)
        watched: dict[str, ManagedProcess | TritonServer] = {"gateway": gateway[1]} if gateway else {}
        for line in banner(triton, gateway):
            logger.info("%s", line)
        # A dead tritonserver is restarted on the same ports; the gateway answers 503 until it is back.
        return _wait_for_exit(watched, [Supervisor(triton, RestartPolicy.for_triton(settings))])


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise
    # One "setup plugin ..." line per Alembic plugin each time the voice library's schema is checked.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_shutdown)
    try:
        return serve(get_settings(), args)
    except ValidationError as exc:  # a QWEN3_TTS_* value the settings refuse
        logger.error("start-up failed: %s", describe_settings_error(exc))
        return 1
    except (StartupError, ServeError, FileNotFoundError, FileExistsError) as exc:
        logger.error("start-up failed: %s", exc)
        return 1
    except Shutdown:
        logger.info("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
