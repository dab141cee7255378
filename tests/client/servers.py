"""Real local HTTP servers for the client tests (no mocks of httpx: every request crosses a socket).

``ScriptedServer`` answers from a FIFO of scripted replies (status, headers, body) and records every
request it receives with a timestamp, so retry tests can check the waits the client really made.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


@dataclass
class Reply:
    status: int = 200
    body: Any = b""  # bytes, str, or anything JSON-serialisable
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before answering (client timeouts)
    # Send only this many bytes of the body (its full length still declared), then drop the connection.
    cut_body_at: int | None = None

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


def error_reply(status: int, message: str, **headers: str) -> Reply:
    """An error in the gateway's body shape."""
    return Reply(
        status, {"error": {"status": status, "type": "x", "message": message, "param": None}}, headers
    )


def pcm_reply(samples: np.ndarray, sample_rate: int = 24000, finish_reason: str = "stop") -> Reply:
    pcm = (np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes()
    headers = {
        "Content-Type": "audio/pcm",
        "X-Sample-Rate": str(sample_rate),
        "X-Audio-Duration": f"{len(samples) / sample_rate:.3f}",
        "X-Finish-Reason": finish_reason,
    }
    return Reply(200, pcm, headers)


def ndjson_reply(chunks: list[np.ndarray], sample_rate: int = 24000, *, last: bool = True) -> Reply:
    lines = []
    for index, samples in enumerate(chunks):
        pcm = (np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes()
        is_last = last and index == len(chunks) - 1
        message = {
            "sequence": index,
            "audio": base64.b64encode(pcm).decode(),
            "sample_rate": sample_rate,
            "is_last": is_last,
            "finish_reason": "stop" if is_last else "",
        }
        lines.append(json.dumps(message))
    body = ("\n".join(lines) + "\n").encode()
    return Reply(200, body, {"Content-Type": "application/x-ndjson", "X-Sample-Rate": str(sample_rate)})


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    """Answers each request with its route's reply, else the next scripted one, else ``default``."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.routes: dict[tuple[str, str], Reply] = {}  # (method, path) → the same reply every time
        self.default = Reply(200, {"status": "ok"})
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> ScriptedServer:
        with self._lock:
            self.replies.extend(replies)
        return self

    def route(self, method: str, path: str, reply: Reply) -> ScriptedServer:
        """Answer ``method path`` with ``reply`` always (for concurrent requests, where FIFO order is not)."""
        with self._lock:
            self.routes[(method, path)] = reply
        return self

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            routed = self.routes.get((recorded.method, recorded.path))
            if routed is not None:
                return routed
            return self.replies.popleft() if self.replies else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(self.command, self.path, dict(self.headers), body, time.monotonic())
                reply = server._next(recorded)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload, content_type = reply.encoded()
                self.send_response(reply.status)
                headers = {"Content-Type": content_type, **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if reply.cut_body_at is not None:
                    payload = payload[: reply.cut_body_at]
                    self.close_connection = True
                with contextlib.suppress(OSError):  # the client may have timed out and left
                    self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                return

        return Handler

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused_url() -> str:
    """A URL on which nothing listens (a port just freed), for connection-refused tests."""
    return f"http://127.0.0.1:{free_port()}"
