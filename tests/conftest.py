"""Shared fixtures: tiny checkpoints, a filled model repository, a real tritonserver on free ports and a real
PostgreSQL server (the gateway's voice-library tests and the end-to-end tests in tests/e2e/ use both).

The session-wide ``triton_server`` serves every model of ``model_repository/`` that has a ``1/model.py``,
with the tiny random checkpoints (or QWEN3_TTS_CHECKPOINT_DIR when set), and is always stopped.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres import PostgresCluster

from qwen3_tts_serving.contract import CHECKPOINTS
from qwen3_tts_serving.launcher import TritonServer, build_model_repository, ensure_checkpoint_dir
from qwen3_tts_serving.settings import PROJECT_ROOT, Settings

# The benchmarks package lives at the project root (``python -m benchmarks.run``), outside the installed
# packages; bench and e2e tests import it.
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

# A Python-backend model for launcher tests: streams `sequence` 0, 1, 2 then FINAL when decoupled,
# answers `sequence` 0 otherwise. `{initialize}` is extra code run at the end of initialize().
_THROWAWAY_MODEL = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(self.config)
{initialize}

    def execute(self, requests):
        if not self.decoupled:
            return [pb_utils.InferenceResponse([self._sequence(0)]) for _ in requests]
        for request in requests:
            sender = request.get_response_sender()
            for number in range(3):
                sender.send(pb_utils.InferenceResponse([self._sequence(number)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    @staticmethod
    def _sequence(number):
        return pb_utils.Tensor("sequence", np.array([[number]], dtype=np.int32))
"""

_THROWAWAY_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 4
model_transaction_policy {{ decoupled: {decoupled} }}
dynamic_batching {{ max_queue_delay_microseconds: 1000 }}
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
input [ {{ name: "text", data_type: TYPE_STRING, dims: [ 1 ] }} ]
output [ {{ name: "sequence", data_type: TYPE_INT32, dims: [ 1 ] }} ]
"""

WritePythonModel = Callable[..., Path]

# A test that needs a real tritonserver (directly or through a fixture that starts one) is end-to-end,
# whatever its file says: `make test-fast` (-m "not e2e") then never starts a server.
_SERVER_FIXTURES = frozenset({"triton_server"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def write_python_model() -> WritePythonModel:
    """``write(model_dir, *, initialize="", decoupled=True, with_config=True) -> model_dir``.

    Writes a throwaway model: ``1/model.py`` and, with ``with_config``, a matching ``config.pbtxt``.
    """

    def write(
        model_dir: Path, *, initialize: str = "", decoupled: bool = True, with_config: bool = True
    ) -> Path:
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        body = textwrap.indent(textwrap.dedent(initialize).strip(), " " * 8)
        (model_dir / "1" / "model.py").write_text(_THROWAWAY_MODEL.format(initialize=body))
        if with_config:
            config = _THROWAWAY_CONFIG.format(name=model_dir.name, decoupled=str(decoupled).lower())
            (model_dir / "config.pbtxt").write_text(config)
        return model_dir

    return write


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    """An empty folder per checkpoint flavour: enough to build a model repository whose throwaway models load
    no weights (tests/unit/test_repository.py, tests/e2e/test_repository_loads.py)."""
    root = tmp_path / "checkpoints"
    for flavour in CHECKPOINTS:
        (root / flavour).mkdir(parents=True)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoints() -> Path:
    """QWEN3_TTS_CHECKPOINT_DIR when set, else the tiny set in .cache/checkpoints/tiny (built once)."""
    return ensure_checkpoint_dir(Settings())


@pytest.fixture(scope="session")
def serving_settings(tiny_checkpoints: Path) -> Settings:
    """Settings of the session's server: the checkpoints above, every port picked free."""
    return Settings(
        checkpoint_dir=tiny_checkpoints,
        triton_http_port=0,
        triton_grpc_port=0,
        triton_metrics_port=0,
        gateway_port=0,
        # A wider batching window than production so that requests sent together are batched together.
        batch_delay_us=20000,
        # Tests assert batching; a loaded CI machine must not make the real-time admission guard hold
        # newcomers back (it has tests of its own).
        realtime_step_budget_s=0.0,
        # A request whose text holds the fault marker gets non-finite values (isolation tests); the
        # others are untouched.
        fault_injection=True,
    )


@pytest.fixture(scope="session")
def model_repository(serving_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's templates filled for ``serving_settings`` (models that have a 1/model.py)."""
    return build_model_repository(serving_settings, tmp_path_factory.mktemp("triton") / "model_repository")


@pytest.fixture(scope="session")
def triton_server(
    serving_settings: Settings, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """A real, ready tritonserver: ``.http_url``, ``.grpc_url`` (host:port), ``.metrics_url``, ``.settings``,
    ``.model_repository`` and ``.log_path``."""
    log_path = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    with TritonServer(model_repository, serving_settings, log_path=log_path) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A real PostgreSQL server (postgres.py) on a free loopback port for the session; always stopped."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A new, empty database of that server: ``postgresql://voices@127.0.0.1:<port>/voices_<n>``."""
    return postgres_cluster.create_database()
