"""Whether the tritonserver a model runs in is stopping, seen from inside the model.

Triton 2.51 calls a model's ``finalize()`` only once no request is in flight: on SIGTERM it closes its
endpoints at once and then waits, up to ``--exit-timeout-secs``, for the requests in flight to end. A stream
that does not end by itself (a voice-agent session waiting for text, a long synthesis) kept the server
waiting until the exit timeout killed it, and its client got a bare "stream removed" instead of the
retryable error. So the models watch for the stop themselves and drain then: the server's HTTP endpoint,
once it has answered, refusing connections means the listener was closed, i.e. the server is stopping
(a busy server is slow to answer, it does not refuse).
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

from .settings import Settings

_log = logging.getLogger(__name__)

POLL_S = 0.5
# Refusals in a row that mean a stop (one could be the listener being rebound; none has been seen).
REFUSALS = 2
_ANY_ADDRESS = ("", "0.0.0.0", "::")


def live_url(settings: Settings | None = None) -> str:
    """The server's liveness URL as its own models reach it: the launcher gives tritonserver's environment
    the HTTP port it actually listens on (QWEN3_TTS_TRITON_HTTP_PORT), the image's entrypoint the same."""
    settings = settings or Settings()
    host = "127.0.0.1" if settings.triton_host in _ANY_ADDRESS else settings.triton_host
    return f"http://{host}:{settings.triton_http_port}/v2/health/live"


class DrainOnce:
    """A model's drain, run once whichever asks first: its server's stop (the watch, on a thread of its
    own) or ``finalize()`` (which then waits for the drain under way)."""

    def __init__(self, drain: Callable[[], None]) -> None:
        self._drain = drain
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._lock:
            if not self._done:
                self._drain()
                self._done = True

    def in_background(self) -> None:
        threading.Thread(target=self, name="drain", daemon=True).start()


def _refused(error: urllib.error.URLError) -> bool:
    return isinstance(error.reason, ConnectionRefusedError)


class ServerWatch:
    """Calls ``on_stop`` once, from a thread of its own, when the server's endpoint starts refusing
    connections after having answered. Never calls it if the endpoint never answered (not reachable from
    here): the models then drain in ``finalize()`` only, as before."""

    def __init__(self, url: str, on_stop: Callable[[], None], poll_s: float = POLL_S) -> None:
        self.url = url
        self._on_stop = on_stop
        self._poll_s = poll_s
        self._ended = threading.Event()
        self.seen_up = False
        self.stopping = False

    def start(self) -> ServerWatch:
        threading.Thread(target=self._run, name="server-watch", daemon=True).start()
        return self

    def end(self) -> None:
        self._ended.set()

    def poll(self) -> bool:
        """One look; True once the server is known to be stopping."""
        try:
            with urllib.request.urlopen(self.url, timeout=self._poll_s * 2):
                pass
        except urllib.error.HTTPError:  # it answered (not live is still an answer)
            pass
        except urllib.error.URLError as error:
            if _refused(error):
                return self.seen_up
            return False  # no answer in time, or not reachable: nothing known
        except OSError:
            return False
        self.seen_up = True
        return False

    def _run(self) -> None:
        refusals = 0
        while not self._ended.wait(self._poll_s):
            refusals = refusals + 1 if self.poll() else 0
            if refusals >= REFUSALS:
                self.stopping = True
                _log.info("the server is stopping (%s refuses connections): draining", self.url)
                self._on_stop()
                return
