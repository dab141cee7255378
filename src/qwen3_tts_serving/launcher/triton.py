"""Run the tritonserver that ships in the nvidia-pytriton wheel, with the Python backend, from Python.

The wheel keeps the server, the Python backend and one backend stub per Python version apart; the backend
expects its stub beside ``libtriton_python.so``. We therefore assemble a backend directory of our own
(symlinks, under the cache dir) instead of writing into site-packages.

    with TritonServer(repository, settings) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import sysconfig
import time
import types
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qwen3_tts_serving.launcher.process import (
    ManagedProcess,
    StartupError,
    connect_host,
    free_ports,
    http_ok,
    read_log_lines,
)
from qwen3_tts_serving.settings import PROJECT_ROOT, Settings, get_settings

logger = logging.getLogger(__name__)

# Directories of this project that model.py files import from. The stub embeds its own interpreter, which
# does not process the venv's .pth files (editable installs), so they go on PYTHONPATH explicitly.
PROJECT_PYTHON_DIRS = ("src", "gateway", "client")
# Model code must never reach out to a hub at load time: checkpoints are local folders.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_PORT_IN_USE = re.compile(r"already in use|address in use|failed to bind", re.IGNORECASE)
_PORT_RETRIES = 3
_GLOG_ERROR = re.compile(r"^E\d{4} ")  # glog severity E + MMDD
_TABLE_BORDER = re.compile(r"^\+-+")
_MAX_LINE_CHARS = 600
# After its exit timeout Triton exits at once; this covers the stubs' exit.
STOP_MARGIN_S = 15.0
# Where the Python backend keeps its shared-memory regions (POSIX shm_open).
SHARED_MEMORY_DIR = Path("/dev/shm")


class TritonNotInstalledError(RuntimeError):
    pass


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates without importing (pytriton's import is heavy)
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalledError(f"package {name!r} is not installed (pip install -r requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class TritonInstallation:
    """Paths inside the installed nvidia-pytriton wheel."""

    server: Path
    python_backend_dir: Path
    stubs_dir: Path
    libs_dir: Path

    @classmethod
    def locate(cls) -> TritonInstallation:
        package = _package_dir("pytriton")
        root = package / "tritonserver"
        found = cls(
            server=root / "bin" / "tritonserver",
            python_backend_dir=root / "backends" / "python",
            stubs_dir=root / "python_backend_stubs",
            libs_dir=package.parent / "nvidia_pytriton.libs",
        )
        for path in (found.server, found.python_backend_dir / "libtriton_python.so", found.libs_dir):
            if not path.exists():
                raise TritonNotInstalledError(f"{path} is missing: is nvidia-pytriton 0.7.0 installed?")
        return found

    def stub(self, python_version: str | None = None) -> Path:
        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.stubs_dir / version / "triton_python_backend_stub"
        if not stub.exists():
            available = sorted(p.name for p in self.stubs_dir.iterdir() if p.is_dir())
            raise TritonNotInstalledError(f"no Python backend stub for Python {version}; found {available}")
        return stub


def _replace_symlink(link: Path, target: Path) -> None:
    # Build the link aside and rename it over the old one: concurrent launchers never see a missing file.
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def assemble_backend_dir(
    dest: Path, installation: TritonInstallation | None = None, python_version: str | None = None
) -> Path:
    """Create ``dest/python/`` with links to the Python backend and the stub; return ``dest``."""
    installation = installation or TritonInstallation.locate()
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = {
        "libtriton_python.so": installation.python_backend_dir / "libtriton_python.so",
        "triton_python_backend_utils.py": installation.python_backend_dir / "triton_python_backend_utils.py",
        "triton_python_backend_stub": installation.stub(python_version),
    }
    for name, target in sources.items():
        _replace_symlink(python_dir / name, target)
    return dest


def _join_paths(*groups: Iterable[str | Path | None]) -> str:
    seen: list[str] = []
    for group in groups:
        for entry in group:
            if entry and str(entry) not in seen:
                seen.append(str(entry))
    return os.pathsep.join(seen)


def _split(value: str | None) -> list[str]:
    return [part for part in (value or "").split(os.pathsep) if part]


def _libpython_dirs() -> list[str]:
    # Prefer the libpython of the interpreter the venv was made from over the system one the stub was
    # linked against: same patch version as the compiled packages, and no Debian libpython needed.
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("INSTSONAME") or ""
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and (Path(libdir) / library).exists():
        return [libdir]
    return []


def server_env(
    installation: TritonInstallation | None = None,
    base_env: Mapping[str, str] | None = None,
    project_root: Path = PROJECT_ROOT,
) -> dict[str, str]:
    """Environment for tritonserver: libraries, a PYTHONPATH the stubs can import from, offline hubs."""
    installation = installation or TritonInstallation.locate()
    env = dict(os.environ if base_env is None else base_env)
    site_packages = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    project_dirs = [project_root / name for name in PROJECT_PYTHON_DIRS if (project_root / name).is_dir()]
    env["PYTHONPATH"] = _join_paths(project_dirs, site_packages, _split(env.get("PYTHONPATH")))
    env["LD_LIBRARY_PATH"] = _join_paths(
        [installation.libs_dir], _libpython_dirs(), _split(env.get("LD_LIBRARY_PATH"))
    )
    env["PATH"] = _join_paths([Path(sys.executable).parent], _split(env.get("PATH")))
    env.update(OFFLINE_ENV)
    return env


def summarize_server_log(path: Path, errors: int = 20, tail: int = 25) -> str:
    """The server's error lines, then its last lines: on a failed start the cause (a model that failed to
    load) sits far above the tail, which is taken up by option tables and shutdown messages."""
    lines = [line[:_MAX_LINE_CHARS] for line in read_log_lines(path) if not _TABLE_BORDER.match(line)]
    error_lines = [line for line in lines if _GLOG_ERROR.match(line)][-errors:]
    summary = ["errors:", *error_lines] if error_lines else []
    return "\n".join([*summary, "last lines:", *lines[-tail:]])


def perf_analyzer_binary() -> Path:
    """perf_analyzer as installed by tritonclient 2.51 beside this interpreter."""
    path = Path(sys.executable).parent / "perf_analyzer"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install tritonclient[all]==2.51.0")
    return path


def perf_analyzer_env(base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for perf_analyzer: it links libcudart.so.12 even on a CPU-only machine."""
    env = dict(os.environ if base_env is None else base_env)
    cudart = _package_dir("nvidia.cuda_runtime") / "lib"
    env["LD_LIBRARY_PATH"] = _join_paths([cudart], _split(env.get("LD_LIBRARY_PATH")))
    return env


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TritonPorts:
        wanted = [settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port]
        picked = iter(free_ports(wanted.count(0), settings.triton_host))
        http, grpc, metrics = (port or next(picked) for port in wanted)
        return cls(http=http, grpc=grpc, metrics=metrics)


class TritonServer:
    """A tritonserver child process that is always stopped (context manager, or ``start()``/``stop()``).

    Ports set to 0 in the settings are picked free; ``start()`` returns once ``/v2/health/ready`` answers
    200 (all models loaded) and raises :class:`StartupError` with the server log's tail otherwise.

    ``stop()`` drains: SIGTERM, on which Triton reports not ready, refuses new requests and lets live streams
    finish for up to ``triton_drain_timeout_s``, then unloads the models (``--exit-timeout-secs`` is
    ``triton_exit_timeout_s``); SIGKILL only after ``stop_timeout_s`` (default: the exit timeout plus a
    margin for the stubs' exit).
    """

    name = "tritonserver"

    def __init__(
        self,
        model_repository: Path,
        settings: Settings | None = None,
        *,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        stop_timeout_s: float | None = None,
        installation: TritonInstallation | None = None,
    ) -> None:
        self.model_repository = Path(model_repository)
        self.settings = settings or get_settings()
        self.installation = installation or TritonInstallation.locate()
        self.extra_args = list(extra_args)
        self.stop_timeout_s = (
            stop_timeout_s
            if stop_timeout_s is not None
            else self.settings.triton_exit_timeout_s + STOP_MARGIN_S
        )
        self.log_path = log_path or self._default_log_path()
        self.ports: TritonPorts | None = None
        self._process: ManagedProcess | None = None
        # The Python backend's shared-memory regions are files in /dev/shm that a server killed (SIGKILL, a
        # crash, the exit timeout) leaves behind: a prefix of this server's own lets them be removed once it
        # has ended, before a restart and after a stop, without touching another server's.
        self.shm_prefix = f"qwen3_tts_{uuid.uuid4().hex[:12]}_"

    def _default_log_path(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.settings.cache_dir / "logs" / f"tritonserver-{stamp}-{os.getpid()}-{id(self):x}.log"

    # --- addresses ----------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return connect_host(self.settings.triton_host)

    def _require_ports(self) -> TritonPorts:
        if self.ports is None:
            raise RuntimeError("the server has not been started")
        return self.ports

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self._require_ports().http}"

    @property
    def grpc_url(self) -> str:
        """``host:port``, the form tritonclient.grpc expects (no scheme)."""
        return f"{self.host}:{self._require_ports().grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self._require_ports().metrics}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running

    @property
    def returncode(self) -> int | None:
        """The exit code once the server has ended (negative: killed by that signal)."""
        return self._process.returncode if self._process else None

    # --- life cycle ---------------------------------------------------------------------------------------
    def command(self, backend_dir: Path, ports: TritonPorts) -> list[str]:
        host = self.settings.triton_host
        return [
            str(self.installation.server),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={host}",
            f"--grpc-address={host}",
            f"--metrics-address={host}",
            f"--http-port={ports.http}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-port={ports.metrics}",
            # On SIGTERM live streams get the drain timeout to finish, the models a margin to unload.
            f"--exit-timeout-secs={self.settings.triton_exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *self.extra_args,
        ]

    def start(self) -> TritonServer:
        if self._process is not None:
            raise RuntimeError("the server was already started")
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository {self.model_repository} does not exist")
        backend_dir = assemble_backend_dir(self._backend_cache_dir(), self.installation)
        env = server_env(self.installation)
        for attempt in range(1, _PORT_RETRIES + 1):
            try:
                self._start_once(backend_dir, env)
                break
            except StartupError as exc:
                if attempt == _PORT_RETRIES or not self._picked_port_was_taken(exc):
                    raise
                logger.warning("a port picked free was taken meanwhile; retrying with new ports")
        logger.info(
            "tritonserver ready at %s / %s (pid %s, log %s)",
            self.http_url,
            self.grpc_url,
            self.pid,
            self.log_path,
        )
        return self

    def _start_once(self, backend_dir: Path, env: Mapping[str, str]) -> None:
        self.ports = TritonPorts.from_settings(self.settings)
        # The models watch this port to see the server stop (server_watch): the one picked, not the setting.
        env = {**env, "QWEN3_TTS_TRITON_HTTP_PORT": str(self.ports.http)}
        self._process = ManagedProcess(
            self.name,
            self.command(backend_dir, self.ports),
            env=env,
            log_path=self.log_path,
            stop_timeout_s=self.stop_timeout_s,
            log_summary=summarize_server_log,
        )
        self._launch(self._process)

    def _launch(self, process: ManagedProcess, *, again: bool = False) -> None:
        try:
            if again:
                process.restart()
            else:
                process.start()
            process.wait_until(self._ready, self.settings.triton_startup_timeout_s)
        except BaseException:  # also Ctrl-C while waiting: never leave a half-started server behind
            process.stop()
            self._remove_shared_memory()
            raise

    def restart(self) -> None:
        """Start the server again, on the same ports (clients keep their address), once what is left of the
        last one is stopped; returns once it is ready, raises :class:`StartupError` like :meth:`start`."""
        if self._process is None:
            raise RuntimeError("the server has not been started")
        self._process.stop()  # what is left of the last one (its stubs), so that its regions can go
        self._remove_shared_memory()
        self._launch(self._process, again=True)

    def _picked_port_was_taken(self, exc: StartupError) -> bool:
        # Only ports picked free can be picked again; a fixed port that is taken stays taken.
        settings = self.settings
        all_picked = not any(
            (settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port)
        )
        return all_picked and bool(_PORT_IN_USE.search(exc.log_tail))

    def _backend_cache_dir(self) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.settings.cache_dir / "triton" / f"backends-py{version}"

    def _ready(self) -> bool:
        return http_ok(f"{self.http_url}/v2/health/ready")

    def stop(self) -> int | None:
        """Stop the server (idempotent); returns its exit code."""
        if self._process is None:
            return None
        code = self._process.stop()
        logger.debug("tritonserver exited with %s", code)
        self._remove_shared_memory()
        return code

    def _remove_shared_memory(self) -> None:
        """Remove this server's shared-memory regions; call only once its process group has ended."""
        for region in SHARED_MEMORY_DIR.glob(f"{self.shm_prefix}*"):
            try:
                region.unlink()
            except FileNotFoundError:
                pass
            else:
                logger.debug("removed %s, left by the stopped server", region)

    def log_tail(self) -> str:
        """Error lines and last lines of the server log."""
        return self._process.log_tail() if self._process else ""

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()
