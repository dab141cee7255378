"""The gateway's own drain on SIGTERM: finish what is open, take nothing new, then let uvicorn exit.

uvicorn's graceful shutdown lets HTTP responses (streams included) finish, but closes every open WebSocket
at once (1012). So SIGTERM first goes here: ``/ready`` answers 503 (``draining``: load balancers stop
sending), new requests get 503 + Retry-After (new WebSockets too, as their handshake's answer; where the
server has no WebSocket denial response they are closed with 1013, try again later), and the requests and
WebSockets already open run on until none is left or ``gateway_drain_timeout_s`` has passed; then
uvicorn's own handler runs and shuts down as usual. A second SIGTERM skips the wait.

A WebSocket counts while it is connected: an idle ``/ws/session`` socket ends by its idle timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
import types
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_body

logger = logging.getLogger(__name__)

# Probes and scrapes are not work to wait for, and must keep answering while the gateway drains.
UNCOUNTED_PATHS = frozenset({"/health", "/ready", "/metrics"})
TRY_AGAIN_LATER = 1013  # WebSocket close code
_POLL_S = 0.1
SignalHandler = Callable[[int, types.FrameType | None], object]


class GatewayDrain:
    """Counts the open requests and WebSockets; drains them on SIGTERM (see the module docstring)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self.open = 0
        self._task: asyncio.Task[None] | None = None

    def install_signal_handler(self) -> bool:
        """Put the drain in front of the SIGTERM handler in place (uvicorn's); False where signals cannot
        be handled (not the main thread: an embedded server) or nobody handles SIGTERM."""
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return False
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: types.FrameType | None) -> None:
            if self._task is not None:  # a second SIGTERM: stop waiting
                logger.warning(
                    "second SIGTERM: shutting down without waiting for %d open requests", self.open
                )
                previous(signum, frame)
                return
            loop.call_soon_threadsafe(self._start, previous, signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        return True

    def _start(self, previous: SignalHandler, signum: int) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.drain_then(lambda: previous(signum, None))
            )

    async def drain_then(self, shutdown: Callable[[], object]) -> None:
        """Refuse new work, wait for the open work (at most ``timeout_s``), then call ``shutdown``."""
        self.draining = True
        logger.info("draining: %d open requests, up to %g s", self.open, self.timeout_s)
        deadline = time.monotonic() + self.timeout_s
        while self.open > 0 and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        if self.open:
            logger.warning("%d requests still open after the drain timeout; shutting down", self.open)
        else:
            logger.info("drained; shutting down")
        shutdown()


class DrainMiddleware:
    """Counts open HTTP requests and WebSockets for :class:`GatewayDrain`; refuses new ones while draining."""

    def __init__(self, app: ASGIApp, drain: GatewayDrain, retry_after_s: int) -> None:
        self.app = app
        self.drain = drain
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in UNCOUNTED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await self._refuse(scope, send)
            return
        self.drain.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.open -= 1

    async def _refuse(self, scope: Scope, send: Send) -> None:
        prefix = "http"
        if scope["type"] == "websocket":
            if "websocket.http.response" not in scope.get("extensions", {}):
                await send({"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": "shutting down"})
                return
            # The ASGI denial response: the handshake gets the same 503 + Retry-After as HTTP. A close
            # before accepting would reach the client as a bare HTTP 403, which reads as "not allowed".
            prefix = "websocket.http"
        body = json.dumps(
            error_body(503, "the gateway is shutting down; retry", "server_overloaded")
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.retry_after_s).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": f"{prefix}.response.start", "status": 503, "headers": headers})
        await send({"type": f"{prefix}.response.body", "body": body})
