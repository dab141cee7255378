"""Child processes that are always stopped: own process group, output in a log file, bounded start-up.

Shared by the Triton launcher and ``qwen3-tts-serve`` (which also runs the gateway this way).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Loaded once here: the pre-exec hook runs between fork and exec and must do as little as possible.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class StartupError(RuntimeError):
    """A child process exited or did not become ready; the message ends with what its log says."""

    def __init__(self, message: str, log_path: Path, log_tail: str) -> None:
        super().__init__(f"{message}\n--- from {log_path} ---\n{log_tail}")
        self.log_path = log_path
        self.log_tail = log_tail


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (the sockets stay open until all are picked)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def connect_host(bind_host: str) -> str:
    """The address a local client uses for a server bound to ``bind_host`` (wildcards mean loopback)."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0") else bind_host


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers 200 now (a readiness probe: refused connections are just "not yet")."""
    try:
        # trust_env=False: a proxy from the environment must not sit between us and a local server.
        return httpx.get(url, timeout=timeout_s, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def read_log_lines(path: Path, max_bytes: int = 1024 * 1024) -> list[str]:
    """The log's last ``max_bytes`` as lines (a runaway log must not be read whole)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ["(no log written)"]
    return data.decode("utf-8", "replace").splitlines()


def read_log_tail(path: Path, lines: int = 60) -> str:
    return "\n".join(read_log_lines(path, max_bytes=64 * 1024)[-lines:])


def exit_description(code: int | None) -> str:
    """How a child ended, in words: "exited with code 3", "was killed by SIGKILL" (a negative code)."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _die_with_parent() -> None:
    # Without this a launcher killed by SIGKILL would leave the server running on its ports. Linux ties
    # the signal to the forking *thread*: start these processes from a thread that lives as long as they do.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One command in a new session (so its whole process group can be signalled), logging to a file."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
        stop_timeout_s: float = 15.0,
        log_summary: Callable[[Path], str] = read_log_tail,
    ) -> None:
        """``log_summary`` picks what a :class:`StartupError` quotes from the log (default: its tail)."""
        self.name = name
        self.cmd = [str(part) for part in cmd]
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.stop_timeout_s = stop_timeout_s
        self.log_summary = log_summary
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the command; raises RuntimeError when it was started already (see :meth:`restart`)."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.debug("starting %s: %s", self.name, " ".join(self.cmd))
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def log_tail(self) -> str:
        return self.log_summary(self.log_path)

    def wait_until(self, probe: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> None:
        """Return once ``probe()`` is true; raise :class:`StartupError` if the process exits or time runs out.

        The wait on the process doubles as the poll interval, so an early exit is noticed at once.
        """
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        deadline = time.monotonic() + timeout_s
        while True:
            if probe():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartupError(
                    f"{self.name} was not ready after {timeout_s:g} s", self.log_path, self.log_tail()
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._proc.wait(timeout=min(interval_s, remaining))
                raise StartupError(
                    f"{self.name} {exit_description(code)} during start-up", self.log_path, self.log_tail()
                )

    def restart(self) -> None:
        """Stop what is left of the process group (a dead leader may leave children), then start again."""
        self.stop()
        self._proc = None
        self.start()

    def stop(self) -> int | None:
        """SIGTERM to the process group, SIGKILL after ``stop_timeout_s``; returns the exit code."""
        if self._proc is None:
            return None
        pgid = self._proc.pid  # a new session's leader: its pid is the group id
        if self._proc.poll() is None:
            logger.debug("stopping %s (pid %d)", self.name, pgid)
            self._signal_group(pgid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %g s; killing it", self.name, self.stop_timeout_s)
                self._signal_group(pgid, signal.SIGKILL)
                self._proc.wait()
        self._reap_group(pgid)
        return self._proc.returncode

    def _reap_group(self, pgid: int, grace_s: float = 2.0) -> None:
        # Children of the leader (Triton's Python stubs) may outlive it for a moment; never leave them behind.
        if self._group_gone_within(pgid, grace_s):
            return
        self._signal_group(pgid, signal.SIGKILL)
        if not self._group_gone_within(pgid, grace_s):
            logger.warning("processes of %s's group %d survived SIGKILL", self.name, pgid)

    def _group_gone_within(self, pgid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._group_exists(pgid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    @staticmethod
    def _group_exists(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
