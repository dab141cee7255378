"""The continuous-batching engine: one per model instance, one thread, every active stream stepped together.

Each loop iteration: run queued commands (text appended by voice agents), admit waiting requests with
one batched prefill and merge them into the running batch, step every active stream by one frame (one
batched talker call, one batched code-predictor pass of 15 small steps), decode the chunks that are due
(equal windows share a decoder call), send them, and drop finished, cancelled or starved rows.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from .batch_state import BatchState, KVBuffers, merge
from .code_predictor import build_code_predictor
from .config import EngineConfig
from .decoder import build_decoder
from .loading import model_spec
from .observer import EngineObserver, NullObserver
from .prompts import PromptBuilder
from .requests import (
    NUM_CODE_GROUPS,
    Capability,
    EngineUnavailableError,
    FinishReason,
    GenerationFaultError,
    InvalidRequestError,
    SamplingParams,
    SynthesisRequest,
    validate,
)
from .sampling import SamplerRows, apply_repetition_penalty, sample
from .streams import AudioChunk, Stream, StreamSink, TextTrack
from .talker_step import TalkerStep
from .text_feed import IncrementalText

logger = logging.getLogger(__name__)

_OUT_OF_MEMORY = "the server is out of GPU memory; retry shortly"
_QUEUE_FULL = "the model's queue is full ({} requests waiting); retry shortly"
_QUEUE_WAIT = "no free slot within {} s: the model's queue is overloaded; retry shortly"
FAULT_MARKER = "[[poison]]"
_NON_FINITE = "internal error: this request's generation produced non-finite values and was stopped"


@dataclass
class EngineStats:
    steps: int = 0  # batched talker steps (one frame for every active stream)
    frames: int = 0  # frames generated over all streams
    prefill_calls: int = 0
    prefilled_requests: int = 0
    max_active: int = 0
    finished: int = 0


@dataclass(eq=False)
class Session:
    """A voice-agent stream whose text is still arriving (Triton sequence = one session)."""

    stream: Stream
    feed: IncrementalText
    last_text_at: float
    queued: bool = False  # handed to the prefill queue (it had text to start with)
    closed: bool = False  # the client sent END (checked when more text is offered)
    input_closed: bool = False  # END has reached the engine thread (decides the end-of-text marker)


def is_repeating(history: list[int], window: int, max_period: int = 4) -> bool:
    """True when the last ``window`` codebook-0 tokens are one short pattern over and over."""
    if window <= 0 or len(history) < window:
        return False
    tail = history[-window:]
    # A pattern must show at least twice within the window to count as a loop.
    periods = range(1, min(max_period, window // 2) + 1)
    return any(all(tail[i] == tail[i % period] for i in range(window)) for period in periods)


class StreamingEngine:
    def __init__(
        self, tts: Any, capability: Capability, config: EngineConfig, observer: EngineObserver | None = None
    ) -> None:
        self.tts = tts
        self.observer: EngineObserver = observer or NullObserver()
        self.capability = capability
        self.config = config
        self.spec = model_spec(tts, capability)
        self.prompts = PromptBuilder(tts, capability)
        self.decoder = build_decoder(tts.model.speech_tokenizer, config)
        self.sample_rate = self.decoder.sample_rate
        self.stats = EngineStats()

        self._talker = tts.model.talker
        self._device = self._talker.device
        talker_config = tts.model.config.talker_config
        self._eos = int(talker_config.codec_eos_token_id)
        self._vocab = int(talker_config.vocab_size)
        self._codebook_size = int(tts.model.config.talker_config.code_predictor_config.vocab_size)
        # Codebook-0 ids above the codebook are control codes; only end-of-speech may be generated.
        self._suppressed = torch.zeros(self._vocab, dtype=torch.bool, device=self._device)
        self._suppressed[self._vocab - 1024 :] = True
        self._suppressed[self._eos] = False
        self._talker_step = TalkerStep(self._talker)
        self._code_predictor = build_code_predictor(self._talker, config.code_predictor, config.graph_buckets)
        self.defaults = SamplingParams.from_generation_config(tts.generate_defaults or {})
        self._tts_pad: torch.Tensor | None = None
        self._tts_eos: torch.Tensor | None = None

        self._cond = threading.Condition()
        self._pending: deque[Stream] = deque()
        self._commands: deque[Callable[[], None]] = deque()
        self._resumable: list[BatchState] = []
        self._paused: dict[int, BatchState] = {}
        self._batch: BatchState | None = None
        self._frame_seconds_ema: float | None = None
        self._sessions: dict[int, Session] = {}
        self._running = False
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------------- intake
    def validate(self, request: SynthesisRequest) -> SynthesisRequest:
        return validate(request, self.spec, self.config.limits)

    def make_stream(self, request: SynthesisRequest, sink: StreamSink) -> Stream:
        sampling = self.defaults.with_overrides(request.sampling)
        sampling.check()
        seed = sampling.seed if sampling.seed is not None else random.getrandbits(63)
        return Stream(
            request=request,
            sink=sink,
            sampling=sampling,
            seed=seed,
            max_frames=self.config.frame_budget(request.text, sampling.max_new_tokens, request.language),
        )

    def submit(self, streams: list[Stream]) -> None:
        """Queue an entry batch; it joins the running batch at the next frame. Past ``max_queued_streams``
        waiting, the rest are refused at once (retry later) rather than queued into a wait nobody wants."""
        with self._cond:
            room = max(0, self.config.max_queued_streams - len(self._pending))
            accepted, refused = streams[:room], streams[room:]
            self._enqueue(accepted)
            self._cond.notify()
        for stream in refused:
            stream.sink.fail(EngineUnavailableError(_QUEUE_FULL.format(self.config.max_queued_streams)))

    def _enqueue(self, streams: list[Stream]) -> None:
        """Caller holds ``self._cond``."""
        now = time.monotonic()
        for stream in streams:
            stream.queued_at = now
        self._pending.extend(streams)

    def run_in_engine(self, command: Callable[[], None]) -> None:
        """Run ``command`` on the engine thread before the next step (state is only touched there)."""
        with self._cond:
            self._commands.append(command)
            self._cond.notify()

    @property
    def active_count(self) -> int:
        return self._batch.size if self._batch is not None else 0

    @property
    def occupied_slots(self) -> int:
        """Streams holding a talker cache: stepping, paused for text, or about to resume. A paused
        voice-agent session keeps its cache (memory) and comes back without asking, so it keeps its slot."""
        return self.active_count + len(self._paused) + sum(state.size for state in self._resumable)

    def has_work(self) -> bool:
        return bool(self._pending or self._commands or self._resumable or self.active_count)

    # ------------------------------------------------------------------------------------------ thread
    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(
            target=self._loop, name=f"engine-{self.capability.value}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._fail_everything(EngineUnavailableError("the model is shutting down; retry"))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._running and not self.has_work():
                    # Waiting sessions need their idle timeout checked even when nothing else happens.
                    if self._cond.wait(timeout=0.5 if self._sessions else None) is False and self._sessions:
                        break
                if not self._running:
                    return
            try:
                self.step()
            except Exception:  # never let the thread die: fail what was in flight and go on serving
                logger.exception("engine step failed")
                self._fail_everything(RuntimeError("internal error while generating"))
            if not self.has_work():
                self.observer.idle(paused=len(self._paused))

    def run_until_idle(self, max_steps: int = 100_000) -> None:
        """Step on the calling thread until nothing is left (tests and offline use)."""
        for _ in range(max_steps):
            if not self.has_work():
                return
            self.step()
        raise RuntimeError("engine did not become idle")

    # -------------------------------------------------------------------------------------------- step
    @torch.inference_mode()
    def step(self) -> None:
        started, frames_before = time.perf_counter(), self.stats.frames
        self._step()
        frames = self.stats.frames - frames_before
        if frames:
            self.observer.step_done(
                seconds=time.perf_counter() - started,
                frames=frames,
                active=self.active_count,
                queued=len(self._pending),
                paused=len(self._paused),
            )

    def _step(self) -> None:
        self._run_commands()
        self._expire_sessions()
        self._admit()
        self._drop_cancelled()
        self._pause_starved()
        try:
            started = time.perf_counter()
            if self._batch is not None and self._batch.size:
                self._advance()
                self._emit_and_retire()  # decoding allocates too
                self._track_frame_time(time.perf_counter() - started)
            else:
                self._emit_and_retire()
        except torch.OutOfMemoryError:
            self._recover_from_oom()

    def _track_frame_time(self, seconds: float) -> None:
        """Moving average of a frame's time for the running batch (prefill excluded)."""
        previous = self._frame_seconds_ema
        self._frame_seconds_ema = seconds if previous is None else 0.7 * previous + 0.3 * seconds

    def _run_commands(self) -> None:
        with self._cond:
            commands = list(self._commands)
            self._commands.clear()
        for command in commands:
            command()

    def _admit(self) -> None:
        with self._cond:
            waiting = list(self._pending)
            self._pending.clear()
        waiting = [s for s in waiting if not self._left_the_queue(s)]
        room = max(0, self.config.max_active_streams - self.occupied_slots)
        if self._over_realtime_budget():
            room = 0  # the streams already speaking would fall behind their listeners: newcomers wait
        entering, rest = waiting[:room], waiting[room:]
        if rest:  # back at the front, ahead of what arrived meanwhile
            with self._cond:
                self._pending.extendleft(reversed(rest))
        resumable, self._resumable = self._resumable, []
        for state in resumable:
            self._batch = merge(self._batch, state)
        for group in _by_text_mode(entering):
            state = self._prefill_or_fail(group)
            if state is not None:
                self._batch = merge(self._batch, state)
        self.stats.max_active = max(self.stats.max_active, self.active_count)

    def _over_realtime_budget(self) -> bool:
        """Frames take longer than ``realtime_step_budget_s`` (a frame is 80 ms of audio): one more stream
        would slow every active one further behind real time, so admission pauses until they speed up
        (streams finish). At least one stream always runs."""
        budget = self.config.realtime_step_budget_s
        frame_s = self._frame_seconds_ema
        return budget > 0 and self.active_count > 0 and frame_s is not None and frame_s > budget

    def _left_the_queue(self, stream: Stream) -> bool:
        """True for a waiting stream whose client went away or that waited past ``max_queue_wait_s``:
        it is ended here, before it costs a prefill."""
        if stream.sink.is_cancelled():
            stream.finish_reason = FinishReason.CANCELLED
            self._send(stream, samples=None)
            return True
        waited = time.monotonic() - (stream.queued_at or time.monotonic())
        if waited > self.config.max_queue_wait_s:
            self._forget_session(stream)
            stream.sink.fail(EngineUnavailableError(_QUEUE_WAIT.format(self.config.max_queue_wait_s)))
            return True
        return False

    def _prefill_or_fail(self, streams: list[Stream]) -> BatchState | None:
        try:
            return self._prefill(streams)
        except torch.OutOfMemoryError:
            _release_cached_memory()
            for stream in streams:
                stream.sink.fail(EngineUnavailableError(_OUT_OF_MEMORY))
            return None
        except Exception as error:
            if len(streams) > 1:
                # Find the request the package refused without failing its batch-mates.
                parts = [self._prefill_or_fail([s]) for s in streams]
                states = [p for p in parts if p is not None]
                merged: BatchState | None = None
                for state in states:
                    merged = merge(merged, state)
                return merged
            logger.warning("prefill failed: %s", error)
            streams[0].sink.fail(error if isinstance(error, ValueError) else RuntimeError("prefill failed"))
            return None

    def _prefill(self, streams: list[Stream]) -> BatchState:
        requests = [s.request for s in streams]
        items = (
            self.prompts.clone_prompt_items(requests) if self.capability is Capability.VOICE_CLONE else None
        )
        prompt = self.prompts.build(requests, items)
        self._tts_pad = prompt.tts_pad_embed.reshape(-1)
        self._tts_eos = prompt.tts_eos_embed.reshape(-1)
        for index, stream in enumerate(streams):
            trailing = prompt.trailing_text[index]
            still_open = self._input_open(stream)
            if still_open and trailing.shape[0]:
                trailing = trailing[:-1]  # the package closed the text with tts_eos; ours is still open
            stream.text_track = TextTrack(trailing, closed=not still_open)
            if items is not None and items[index].icl_mode:
                stream.context_codes = items[index].ref_code
        mask = prompt.attention_mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self._talker.model(
            inputs_embeds=prompt.inputs_embeds,
            attention_mask=mask,
            position_ids=positions.unsqueeze(0).expand(3, -1, -1),
            past_key_values=cache,
            use_cache=True,
        )
        hidden = out.last_hidden_state[:, -1:]
        state = BatchState(
            streams=list(streams),
            kv=KVBuffers.from_cache(cache),
            attention_mask=mask,
            positions=mask.sum(-1),
            past_hidden=hidden,
            next_cb0=torch.zeros(len(streams), dtype=torch.long, device=self._device),
            seen_cb0=torch.zeros(len(streams), self._vocab, dtype=torch.bool, device=self._device),
        )
        state.next_cb0 = self._sample_cb0(state, self._talker.codec_head(hidden[:, -1]))
        self.stats.prefill_calls += 1
        self.stats.prefilled_requests += len(streams)
        return state

    def _advance(self) -> None:
        """One frame for every active stream."""
        state = self._batch
        assert state is not None
        codes = self._predict_codes(state)
        inputs = self._frame_embeddings(codes) + self._text_inputs(state.streams).unsqueeze(1)
        state.append_column()
        state.past_hidden = self._talker_step(inputs, state)
        state.positions = state.positions + 1
        logits = self._talker.codec_head(state.past_hidden[:, -1])
        if self.config.fault_injection:
            logits = _inject_faults(state.streams, logits)
        state.next_cb0 = self._sample_cb0(state, logits)
        # One copy to the host per frame: the frame's codes, the next codebook-0 token and the row's health
        # (a non-finite hidden state shows in its logits).
        unhealthy = ~torch.isfinite(logits).all(dim=-1)
        report = torch.cat([codes, state.next_cb0.unsqueeze(1), unhealthy.long().unsqueeze(1)], 1)
        rows = report.tolist()
        poisoned = {i for i, row in enumerate(rows) if self._is_poisoned(row)}
        for index, stream in enumerate(state.streams):
            if index in poisoned:
                continue
            stream.frames.append(codes[index])
            stream.cb0_history.append(rows[index][0])
        self.stats.steps += 1
        self.stats.frames += state.size - len(poisoned)
        next_tokens = [row[NUM_CODE_GROUPS] for i, row in enumerate(rows) if i not in poisoned]
        if poisoned:
            self._fail_poisoned(state, poisoned)
        if self._batch is not None:
            self._mark_finished(self._batch, next_tokens)

    def _is_poisoned(self, row: list[int]) -> bool:
        """A row whose numbers went bad: non-finite hidden state or logits, a code outside the codebook,
        or a next codebook-0 token that is a control code other than end-of-speech (only non-finite
        scores can make the sampler pick one). Decoding it would fail the whole batch's decoder call."""
        frame, next_cb0, unhealthy = row[:NUM_CODE_GROUPS], row[NUM_CODE_GROUPS], row[NUM_CODE_GROUPS + 1]
        out_of_codebook = any(not 0 <= code < self._codebook_size for code in frame)
        bad_next = not 0 <= next_cb0 < self._codebook_size and next_cb0 != self._eos
        return bool(unhealthy) or out_of_codebook or bad_next

    def _fail_poisoned(self, state: BatchState, rows: set[int]) -> None:
        """The poisoned streams fail alone; the rest of the batch steps on."""
        for row in sorted(rows):
            stream = state.streams[row]
            logger.warning("stream failed: non-finite values at frame %d", stream.frame_count)
            self._forget_session(stream)
            stream.sink.fail(GenerationFaultError(_NON_FINITE))
        self.stats.finished += len(rows)
        self._batch = self._without_rows(state, rows)

    def _predict_codes(self, state: BatchState) -> torch.Tensor:
        """Codebooks 1-15 for each row's pending codebook-0 token: [B, 16]."""
        rows = self._sampler_rows(state.streams, subtalker=True)
        frame_index = torch.tensor([s.frame_count for s in state.streams], device=self._device)
        return self._code_predictor.predict(state.past_hidden, state.next_cb0, rows, frame_index)

    def _frame_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        # Summed the way the package sums them (concatenate, then sum) so greedy output matches it.
        embeddings = self._talker.code_predictor.get_input_embeddings()
        parts = [self._talker.get_input_embeddings()(codes[:, :1])]
        parts += [embeddings[i](codes[:, i + 1 : i + 2]) for i in range(NUM_CODE_GROUPS - 1)]
        return torch.cat(parts, dim=1).sum(1, keepdim=True)

    def _text_inputs(self, streams: list[Stream]) -> torch.Tensor:
        assert self._tts_pad is not None
        rows = []
        for stream in streams:
            assert stream.text_track is not None
            row = stream.text_track.next_embedding()
            rows.append(self._tts_pad if row is None else row)
        return torch.stack(rows)

    def _sampler_rows(self, streams: list[Stream], *, subtalker: bool) -> SamplerRows:
        params = [s.sampling for s in streams]
        if subtalker:
            return SamplerRows.build(
                do_sample=[p.subtalker_do_sample for p in params],
                temperature=[p.subtalker_temperature for p in params],
                top_k=[p.subtalker_top_k for p in params],
                top_p=[p.subtalker_top_p for p in params],
                seed=[s.seed for s in streams],
                device=self._device,
            )
        return SamplerRows.build(
            do_sample=[p.do_sample for p in params],
            temperature=[p.temperature for p in params],
            top_k=[p.top_k for p in params],
            top_p=[p.top_p for p in params],
            seed=[s.seed for s in streams],
            device=self._device,
        )

    def _sample_cb0(self, state: BatchState, logits: torch.Tensor) -> torch.Tensor:
        """The talker's logits processors (as the package configures transformers' generate), then sample."""
        streams = state.streams
        penalty = torch.tensor([s.sampling.repetition_penalty for s in streams], device=self._device)
        logits = apply_repetition_penalty(logits.float(), state.seen_cb0, penalty)
        logits = logits.masked_fill(self._suppressed, float("-inf"))
        # End-of-speech is held back for the first two tokens (as the package does) and while a session's
        # text is still arriving: the talker cannot have finished a sentence it has not seen yet.
        too_early = torch.tensor(
            [s.samples_drawn < 2 or (s.text_track is not None and not s.text_track.closed) for s in streams],
            device=self._device,
        )
        logits[:, self._eos] = logits[:, self._eos].masked_fill(too_early, float("-inf"))
        drawn = torch.tensor([s.samples_drawn for s in streams], device=self._device)
        tokens = sample(logits, self._sampler_rows(streams, subtalker=False), drawn, 0)
        state.seen_cb0[torch.arange(len(streams), device=self._device), tokens] = True
        for stream in streams:
            stream.samples_drawn += 1
        return tokens

    def _mark_finished(self, state: BatchState, next_tokens: list[int]) -> None:
        for stream, token in zip(state.streams, next_tokens, strict=True):
            if token == self._eos:
                stream.finish_reason = FinishReason.STOP
            elif stream.frame_count >= stream.max_frames:
                stream.finish_reason = FinishReason.LENGTH
            elif is_repeating(stream.cb0_history, self.config.repetition_window):
                stream.finish_reason = FinishReason.REPETITION

    # ------------------------------------------------------------------------------ leaving the batch
    def _drop_cancelled(self) -> None:
        """A client that went away frees its row before the next frame is computed."""
        state = self._batch
        if state is None:
            return
        cancelled = {i for i, s in enumerate(state.streams) if s.sink.is_cancelled()}
        if not cancelled:
            return
        for row in cancelled:
            stream = state.streams[row]
            stream.finish_reason = FinishReason.CANCELLED
            self._send(stream, samples=None)
        self.stats.finished += len(cancelled)
        self._batch = self._without_rows(state, cancelled)

    def _pause_starved(self) -> None:
        """Streams whose open text ran dry leave the step batch with their cache until text arrives."""
        state = self._batch
        if state is None:
            return
        starved = [
            i
            for i, s in enumerate(state.streams)
            if not s.finished and s.text_track.starved(s.lookahead or 0)
        ]
        if not starved:
            return
        for row in starved:
            self._paused[id(state.streams[row])] = state.select([row])
        self._batch = self._without_rows(state, set(starved))

    def resume(self, stream: Stream) -> None:
        """Engine thread only: put a paused stream back into the step batch at the next frame."""
        paused = self._paused.pop(id(stream), None)
        if paused is not None:
            self._resumable.append(paused)

    def _emit_and_retire(self) -> None:
        state = self._batch
        if state is None:
            return
        due = [s for s in state.streams if self._chunk_due(s)]
        if due:
            self._send_chunks(due)
        done = {i for i, s in enumerate(state.streams) if s.finished}
        if done:
            self.stats.finished += len(done)
            self._batch = self._without_rows(state, done)

    def _chunk_due(self, stream: Stream) -> bool:
        if stream.finished:
            return True
        return stream.frame_count - stream.emitted_frames >= self.config.chunk_size(stream.chunks_sent)

    def _send_chunks(self, streams: list[Stream]) -> None:
        for stream, samples in zip(streams, self.decoder.decode_streams(streams), strict=True):
            self._send(stream, samples)

    def _send(self, stream: Stream, samples: Any) -> None:
        import numpy as np

        chunk = AudioChunk(
            sequence=stream.chunks_sent,
            audio=samples if samples is not None else np.zeros(0, dtype=np.float32),
            sample_rate=self.sample_rate,
            is_last=stream.finished,
            finish_reason=stream.finish_reason.value if stream.finish_reason else "",
        )
        stream.emitted_frames = stream.frame_count
        stream.chunks_sent += 1
        if stream.first_audio_at is None and chunk.audio.size:
            stream.first_audio_at = time.monotonic()
            self.observer.first_audio(stream.first_audio_at - (stream.queued_at or stream.submitted_at))
        if chunk.is_last:
            self._forget_session(stream)
            self.observer.finished(chunk.finish_reason)
        stream.sink.send(chunk)

    @staticmethod
    def _without_rows(state: BatchState, rows: set[int]) -> BatchState | None:
        keep = [i for i in range(state.size) if i not in rows]
        return state.select(keep) if keep else None

    # ------------------------------------------------------------------------------ voice-agent sessions
    def open_sessions(self, entries: list[tuple[int, Stream, bool]]) -> None:
        """Start sessions (key, stream, input already closed); their text may keep arriving."""
        with self._cond:
            for key, stream, closed in entries:
                if key in self._sessions:
                    stream.sink.fail(InvalidRequestError(f"session {key} is already running"))
                    continue
                stream.session_key = key
                if stream.lookahead is None:
                    stream.lookahead = self.config.session_lookahead_tokens
                session = Session(
                    stream=stream, feed=IncrementalText(), last_text_at=time.monotonic(), closed=closed
                )
                self._sessions[key] = session
                first_text, stream.request.text = stream.request.text, ""
                self._commands.append(
                    lambda s=session, t=first_text, c=closed: self._take_text(s, t, False, c)
                )
            self._cond.notify()

    def append_text(self, key: int, fragment: str, *, flush: bool = False, close: bool = False) -> None:
        """Queue text for a running session; raises InvalidRequestError for an unknown or finished one."""
        with self._cond:
            session = self._sessions.get(key)
            if session is None or session.closed:
                raise InvalidRequestError(f"no open session {key}: it finished, timed out or never started")
            total = len(session.feed.received) + len(fragment)
            if total > self.config.max_text_length:
                raise InvalidRequestError(
                    f"session text would reach {total} characters; the limit is {self.config.max_text_length}"
                )
            session.closed = close
            self._commands.append(lambda: self._take_text(session, fragment, flush, close))
            self._cond.notify()

    def _input_open(self, stream: Stream) -> bool:
        session = self._sessions.get(stream.session_key) if stream.session_key is not None else None
        return session is not None and not session.input_closed

    def _take_text(self, session: Session, fragment: str, flush: bool, close: bool) -> None:
        """Engine thread: commit what is stable, then feed the talker's text track or start the stream."""
        stream = session.stream
        if stream.finished:
            return
        session.last_text_at = time.monotonic()
        session.input_closed = session.input_closed or close
        piece = session.feed.feed(fragment, flush=flush, close=close)
        stream.max_frames = self.config.frame_budget(
            session.feed.received, stream.sampling.max_new_tokens, stream.request.language
        )
        track = stream.text_track
        if track is None:  # not prefilled yet: the prompt will hold all text committed until then
            stream.request.text += piece
            if not session.queued and stream.request.text.strip():
                session.queued = True
                with self._cond:
                    self._enqueue([stream])
            elif not session.queued and close:
                stream.finish_reason = FinishReason.STOP  # the session ended without anything to say
                self._send(stream, samples=None)
            return
        if piece:
            track.append(self.prompts.text_embeddings_for(self._token_ids(piece)))
        if close:
            assert self._tts_eos is not None
            track.close(self._tts_eos)
        self.resume(stream)

    def _token_ids(self, text: str) -> list[int]:
        return self.tts.processor(text=text, return_tensors="pt")["input_ids"][0].tolist()

    def _forget_session(self, stream: Stream) -> None:
        if stream.session_key is not None:
            with self._cond:
                session = self._sessions.get(stream.session_key)
                if session is not None and session.stream is stream:
                    del self._sessions[stream.session_key]

    def _expire_sessions(self) -> None:
        """End sessions whose client left or whose text stopped coming while they wait for it."""
        now = time.monotonic()
        with self._cond:
            sessions = list(self._sessions.values())
        for session in sessions:
            stream = session.stream
            waiting = not session.queued or id(stream) in self._paused
            if not waiting or stream.finished:
                continue
            if stream.sink.is_cancelled():
                self._end_waiting(session, FinishReason.CANCELLED)
            elif now - session.last_text_at > self.config.session_idle_timeout_s:
                self._end_waiting(session, FinishReason.IDLE_TIMEOUT)

    def _end_waiting(self, session: Session, reason: FinishReason) -> None:
        stream = session.stream
        stream.finish_reason = reason
        paused = self._paused.pop(id(stream), None)
        if paused is not None and reason is not FinishReason.CANCELLED:
            self._send_chunks([stream])  # the audio of frames made before the pause, then the end
        else:
            self._send(stream, samples=None)
        self.stats.finished += 1

    # ---------------------------------------------------------------------------------------- faults
    def _recover_from_oom(self) -> None:
        logger.error("out of memory with %d active streams; failing them", self.active_count)
        state, self._batch = self._batch, None
        _release_cached_memory()
        for stream in state.streams if state else []:
            stream.sink.fail(EngineUnavailableError(_OUT_OF_MEMORY))

    def _fail_everything(self, error: Exception) -> None:
        with self._cond:
            pending = list(self._pending)
            self._pending.clear()
        streams = pending + (self._batch.streams if self._batch else [])
        streams += [s for state in [*self._resumable, *self._paused.values()] for s in state.streams]
        with self._cond:
            streams += [session.stream for session in self._sessions.values() if not session.queued]
            self._sessions.clear()
        self._batch, self._resumable, self._paused = None, [], {}
        for stream in streams:
            stream.sink.fail(error)


def _inject_faults(streams: list[Stream], logits: torch.Tensor) -> torch.Tensor:
    """Tests only (``fault_injection``): non-finite logits for the rows asking for it by FAULT_MARKER."""
    poisoned = [FAULT_MARKER in s.request.text and s.frame_count >= 2 for s in streams]
    if not any(poisoned):
        return logits
    mask = torch.tensor(poisoned, device=logits.device).unsqueeze(1)
    return logits.masked_fill(mask, float("nan"))


def _by_text_mode(streams: list[Stream]) -> list[list[Stream]]:
    groups: dict[bool, list[Stream]] = {}
    for stream in streams:
        groups.setdefault(stream.request.text_open, []).append(stream)
    return list(groups.values())


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
