"""A throwaway PostgreSQL server for tests: Debian's server binaries (``make setup`` installs the
``postgresql`` package), a fresh cluster in a temp dir, listening on a free port of 127.0.0.1 only.

initdb and the server refuse to run as root; as root they run as the package's ``postgres`` user. Local
connections are trusted (nothing but this machine can reach the port); fsync is off, since the data is
thrown away.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from qwen3_tts_serving.launcher.process import free_ports, read_log_tail

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "voices"
_START_TRIES = 3


def server_bin_dir() -> Path:
    """The newest installed server's bin dir (``/usr/lib/postgresql/<major>/bin``)."""
    candidates = sorted(
        (path for path in PG_ROOT.glob("*/bin") if (path / "initdb").exists() and path.parent.name.isdigit()),
        key=lambda path: int(path.parent.name),
    )
    if not candidates:
        raise FileNotFoundError(
            f"no PostgreSQL server under {PG_ROOT}/<major>/bin; `make setup` installs Debian's postgresql"
        )
    return candidates[-1]


class PostgresCluster:
    """``with PostgresCluster() as cluster:`` a running server; ``cluster.create_database()`` -> URL."""

    def __init__(self) -> None:
        self.bin_dir = server_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="qwen3-tts-pg-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = 0
        self._run_as = "postgres" if os.geteuid() == 0 else None
        self._names = itertools.count(1)

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / tool), *args],
            user=self._run_as,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def _check(self, tool: str, *args: str) -> str:
        result = self._run(tool, *args)
        if result.returncode != 0:
            log = read_log_tail(self.log_path) if self.log_path.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{log}")
        return result.stdout

    def start(self) -> None:
        if self._run_as:
            shutil.chown(self.root, user=self._run_as)
        self._check("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8")
        for attempt in range(_START_TRIES):
            self.port = free_ports(1)[0]
            try:
                self.start_server()
                return
            except RuntimeError:
                if attempt == _START_TRIES - 1:  # else a port taken between picking and binding: pick again
                    raise

    def start_server(self) -> None:
        """Start the server (again, after ``stop_server``) on ``self.port``, with the data it had."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._check(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-o", options, "start"
        )

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server (an outage: open connections are cut); with ``fast`` its data stays for
        ``start_server`` (``immediate`` may lose the last commits, as synchronous_commit is off)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def stop(self) -> None:
        self.stop_server("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _client_args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]

    def create_database(self) -> str:
        """A new empty database; its URL (``postgresql://``, as a user would set ``voice_db_url``)."""
        name = f"voices_{next(self._names)}"
        self._check("createdb", *self._client_args(), name)
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def dump(self, url: str) -> str:
        """``pg_dump`` of the database of ``url`` (schema and data, as SQL text)."""
        return self._check("pg_dump", *self._client_args(), url.rsplit("/", 1)[1])
