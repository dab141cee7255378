"""server_watch.ServerWatch against a real HTTP listener on 127.0.0.1: a stop is a listener that answered
and then refuses connections; one that never answered is never taken for a stop."""

from __future__ import annotations

import http.server
import socket
import threading
import time

from qwen3_tts_serving import server_watch
from qwen3_tts_serving.settings import Settings

POLL_S = 0.05


class _Live(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/health/live" else 400)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_that_answered_and_then_closes_its_listener_is_stopping() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Live)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped = threading.Event()
    url = f"http://127.0.0.1:{server.server_address[1]}/v2/health/live"
    watch = server_watch.ServerWatch(url, stopped.set, poll_s=POLL_S).start()
    try:
        deadline = time.monotonic() + 5
        while not watch.seen_up:
            assert time.monotonic() < deadline, "the live endpoint was never seen"
            time.sleep(POLL_S)
        time.sleep(5 * POLL_S)
        assert not stopped.is_set()  # answering: not stopping
        server.shutdown()
        server.server_close()  # the listener closes, as tritonserver's does on SIGTERM
        assert stopped.wait(5), "the stop was not seen"
        assert watch.stopping
    finally:
        watch.end()


def test_an_endpoint_that_never_answered_is_never_taken_for_a_stop() -> None:
    stopped = threading.Event()
    url = f"http://127.0.0.1:{_free_port()}/v2/health/live"  # nothing listens: refused from the start
    watch = server_watch.ServerWatch(url, stopped.set, poll_s=POLL_S).start()
    try:
        assert not stopped.wait(10 * POLL_S) and not watch.seen_up
    finally:
        watch.end()


def test_the_url_is_the_servers_own_http_port_on_loopback() -> None:
    settings = Settings(_env_file=None, triton_http_port=8123, triton_host="0.0.0.0")  # type: ignore[call-arg]
    assert server_watch.live_url(settings) == "http://127.0.0.1:8123/v2/health/live"
    settings = Settings(_env_file=None, triton_http_port=8123, triton_host="10.0.0.5")  # type: ignore[call-arg]
    assert server_watch.live_url(settings) == "http://10.0.0.5:8123/v2/health/live"
