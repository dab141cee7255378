"""Keep a child process up: restart it when it dies, with backoff, and give up on a crash loop.

``qwen3-tts-serve`` supervises its tritonserver this way: a killed or crashed server is started again on the
same ports while the gateway keeps running (it answers 503 + Retry-After meanwhile) and serves again once
the server is ready. Restarts in a row are bounded; a server that stays up long enough starts the count
again. Every line says how the process ended (exit code or signal), never a guess from its log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qwen3_tts_serving.launcher.process import StartupError, exit_description
from qwen3_tts_serving.settings import Settings

logger = logging.getLogger(__name__)


class Supervised(Protocol):
    """What the supervisor needs of a child: :class:`ManagedProcess` and :class:`TritonServer` both fit."""

    name: str
    log_path: Path

    @property
    def pid(self) -> int | None: ...

    @property
    def is_running(self) -> bool: ...

    @property
    def returncode(self) -> int | None: ...

    def restart(self) -> None:
        """Start the child again; raise :class:`StartupError` when it does not come up."""


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int
    backoff_s: float
    max_backoff_s: float
    reset_after_s: float

    @classmethod
    def for_triton(cls, settings: Settings) -> RestartPolicy:
        return cls(
            max_restarts=settings.triton_restart_attempts,
            backoff_s=settings.triton_restart_backoff_s,
            max_backoff_s=settings.triton_restart_backoff_max_s,
            reset_after_s=settings.triton_restart_reset_s,
        )

    def delay_s(self, attempt: int) -> float:
        """Wait before restart number ``attempt`` (1-based) of a run: doubled each time, capped."""
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


class Supervisor:
    """Call :meth:`check` from a watchdog loop; it returns False once the child is given up."""

    def __init__(
        self,
        child: Supervised,
        policy: RestartPolicy,
        *,
        setting_name: str = "QWEN3_TTS_TRITON_RESTART_ATTEMPTS",
    ) -> None:
        """``setting_name`` is named in the give-up line: it is what a user changes to allow more tries."""
        self.child = child
        self.policy = policy
        self.setting_name = setting_name
        self.restarts_in_a_row = 0
        self._up_since = time.monotonic()

    def check(self) -> bool:
        """True while the child runs (restarted here if it had died); False when it was given up."""
        if self.child.is_running:
            if self.restarts_in_a_row and time.monotonic() - self._up_since >= self.policy.reset_after_s:
                logger.info(
                    "%s has been up for %g s; restart count reset", self.child.name, self.policy.reset_after_s
                )
                self.restarts_in_a_row = 0
            return True
        return self._restart(f"{self.child.name} {exit_description(self.child.returncode)}")

    def _restart(self, ending: str) -> bool:
        """Restart until the child is up or the tries run out; ``ending`` says how the last run ended."""
        while True:
            if self.restarts_in_a_row >= self.policy.max_restarts:
                self._give_up(ending)
                return False
            self.restarts_in_a_row += 1
            attempt = self.restarts_in_a_row
            delay = self.policy.delay_s(attempt)
            logger.warning(
                "%s; restarting in %.1f s (attempt %d of %d)",
                ending,
                delay,
                attempt,
                self.policy.max_restarts,
            )
            time.sleep(delay)
            try:
                self.child.restart()
            except StartupError as exc:
                ending = f"restart failed: {str(exc).splitlines()[0]}"
                continue
            self._up_since = time.monotonic()
            logger.info(
                "%s is running again (pid %s; attempt %d of %d)",
                self.child.name,
                self.child.pid,
                attempt,
                self.policy.max_restarts,
            )
            return True

    def _give_up(self, ending: str) -> None:
        tries = self.policy.max_restarts
        outcome = (
            f"giving up after {tries} restart{'s' if tries != 1 else ''} in a row"
            if tries
            else "not restarting"
        )
        logger.error(
            "%s; %s (%s=%d); log: %s", ending, outcome, self.setting_name, tries, self.child.log_path
        )
