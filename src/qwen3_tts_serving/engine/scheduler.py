"""Who runs next: the admission queue, the per-step prefill budget and the real-time admission guard.

Requests wait in a bounded queue (``max_queued_streams``; past it they are refused at once, past
``max_queue_wait_s`` of waiting they fail). Admission gives waiting streams the free slots, unless frames
already take longer than ``realtime_step_budget_s``. An admitted stream has its prompt built at once
(host work) and then waits in ``prepared`` for its prefill, which is bounded per step by
``prefill_tokens_per_step`` (rows x longest prompt of the padded batch): a burst of long prompts is
prefilled over several steps while the streams already speaking keep their pace, instead of freezing
them for one huge prefill. The prompt building is bounded the same way: newcomers are taken while the
prepared ones are used up, and only as many as the budget holds by a length estimate.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .config import EngineConfig
from .streams import Stream

# Prompt tokens besides the text (role and control tokens, speaker / language codec prefix), for the
# admission estimate; a text character is counted as a token (BPE takes fewer, so it errs on the safe side).
_PROMPT_OVERHEAD_TOKENS = 32


def estimated_prompt_tokens(stream: Stream) -> int:
    request = stream.request
    return len(request.text) + len(request.instruct or "") + _PROMPT_OVERHEAD_TOKENS


class Scheduler:
    def __init__(self, config: EngineConfig, lock: threading.Condition) -> None:
        self._config = config
        self._lock = lock
        self._pending: deque[Stream] = deque()
        self.prepared: deque[Stream] = deque()  # prompt built, prefill still to come (a slot is theirs)
        self._frame_seconds_ema: float | None = None

    # ---------------------------------------------------------------------------------- any thread
    def submit(self, streams: list[Stream], free_slots: int = 0) -> list[Stream]:
        """Queue what fits; return the streams refused because the queue is full. ``free_slots``: slots no
        stream holds or is promised; the streams that will take them are not waiting for a slot, so a burst
        at an idle engine is not refused for want of queue places while slots are free."""
        with self._lock:
            unclaimed = max(0, free_slots - len(self.prepared))
            room = max(0, self._config.max_queued_streams + unclaimed - len(self._pending))
            self.enqueue(streams[:room])
            return streams[room:]

    def enqueue(self, streams: list[Stream]) -> None:
        with self._lock:
            now = time.monotonic()
            for stream in streams:
                stream.queued_at = now
            self._pending.extend(streams)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def has_waiting(self) -> bool:
        """Streams admission could take now (not those whose voice is still being encoded)."""
        with self._lock:
            return bool(self.prepared) or any(not s.encoding_voice for s in self._pending)

    # ------------------------------------------------------------------------------- engine thread
    def admit(self, free_slots: int, active: int, leaves_queue: Callable[[Stream], bool]) -> list[Stream]:
        """The waiting streams that enter now (oldest first), at most ``free_slots`` less those already
        prepared; ``leaves_queue`` ends (and drops) a stream that was cancelled or waited too long."""
        with self._lock:
            # A stream whose voice is still being encoded keeps its place and is not admitted yet.
            held = [stream for stream in self._pending if stream.encoding_voice]
            waiting = [stream for stream in self._pending if not stream.encoding_voice]
            self._pending.clear()
        held = [stream for stream in held if not leaves_queue(stream)]
        waiting = [stream for stream in waiting if not leaves_queue(stream)]
        room = max(0, free_slots - len(self.prepared))
        if self.over_realtime_budget(active):
            room = 0  # the streams already speaking would fall behind their listeners: newcomers wait
        if self.prepared:
            room = 0  # their prefill comes first; newcomers' prompts are built once it is done
        count, tokens = 0, 0
        while count < min(room, len(waiting)):
            tokens += estimated_prompt_tokens(waiting[count])
            if count and tokens > self._config.prefill_tokens_per_step:
                break
            count += 1
        entering, rest = waiting[:count], waiting[count:] + held
        if rest:  # back at the front, ahead of what arrived meanwhile
            rest.sort(key=lambda stream: stream.queued_at or 0.0)
            with self._lock:
                self._pending.extendleft(reversed(rest))
        return entering

    def next_prefill(self, prompt_length: Callable[[Stream], int]) -> list[Stream]:
        """The prepared streams whose prefill runs this step: oldest first while the padded batch (rows x
        longest prompt) stays within ``prefill_tokens_per_step``; always at least one."""
        budget = self._config.prefill_tokens_per_step
        batch: list[Stream] = []
        longest = 0
        while self.prepared:
            length = max(longest, prompt_length(self.prepared[0]))
            if batch and length * (len(batch) + 1) > budget:
                break
            batch.append(self.prepared.popleft())
            longest = length
        return batch

    def drain(self) -> list[Stream]:
        """Everything waiting, removed (shutting down or failing everything)."""
        with self._lock:
            streams = [*self._pending, *self.prepared]
            self._pending.clear()
            self.prepared.clear()
        return streams

    def track_frame_time(self, seconds: float) -> None:
        """Moving average of a frame's time for the running batch (prefill excluded)."""
        previous = self._frame_seconds_ema
        self._frame_seconds_ema = seconds if previous is None else 0.7 * previous + 0.3 * seconds

    def over_realtime_budget(self, active: int) -> bool:
        """Frames take longer than ``realtime_step_budget_s`` (a frame is 80 ms of audio): one more stream
        would slow every active one further behind real time, so admission pauses until they speed up
        (streams finish). At least one stream always runs."""
        budget = self._config.realtime_step_budget_s
        frame_s = self._frame_seconds_ema
        return budget > 0 and active > 0 and frame_s is not None and frame_s > budget
