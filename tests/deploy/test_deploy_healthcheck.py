"""docker/healthcheck.py against a local HTTP server: 2xx is healthy, anything else is not."""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .helpers import REPO

spec = importlib.util.spec_from_file_location("healthcheck", REPO / "docker" / "healthcheck.py")
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response({"/ok": 200, "/loading": 503}.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ok_is_healthy(base_url: str) -> None:
    assert healthcheck.main([f"{base_url}/ok"]) == 0


@pytest.mark.parametrize("path", ["/loading", "/missing"])
def test_errors_are_unhealthy(base_url: str, path: str) -> None:
    assert healthcheck.main([f"{base_url}{path}"]) == 1


def test_refused_connection_is_unhealthy() -> None:
    assert healthcheck.main([f"http://127.0.0.1:{free_port()}/ok", "1"]) == 1


def test_port_variables_are_expanded(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HC_TEST_PORT", base_url.rsplit(":", 1)[1])
    assert healthcheck.main(["http://127.0.0.1:${HC_TEST_PORT}/ok"]) == 0


def test_usage_error() -> None:
    assert healthcheck.main([]) == 2
