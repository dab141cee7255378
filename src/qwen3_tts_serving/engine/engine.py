"""The continuous-batching engine: one per model instance, one thread, every active stream stepped together.

Each step: run queued commands (text appended by voice agents), admit waiting requests (prompts built at
once, prefills batched within a per-step token budget, each written into the stream's own slot of the
talker's slot cache), launch one frame for every active stream (``frame_step``: one CUDA graph on a GPU),
then, while the device computes it, take the previous frame's results (one asynchronous copy), let
finished, cancelled or failed streams leave (their slot is simply freed) and decode and send the chunks
that are due (on a GPU on a stream of its own, beside the frame). A stream that ended in frame N was
already launched in frame N + 1: that frame's row is computed and ignored.

The parts are modules of their own: ``scheduler`` (queue, who is admitted when, prefill budget, real-time
guard), ``admission`` (the admitted into slots: prompts built, prefilled, joined; failures per stream),
``prefill`` (the package's prompts and the talker's prefill), ``frame_step`` and ``slot_cache`` (the device
step), ``sessions`` (voice agents' streamed text).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..contract import SHUTTING_DOWN
from . import graphs
from .admission import OUT_OF_MEMORY, Admission, Refusal, prompt_length, release_cached_memory
from .capacity import kv_bytes_per_slot
from .code_predictor import frame_step_predictor
from .config import EngineConfig
from .decoder import build_decoder
from .frame_step import BAD, NEXT_CB0, FrameHandle, FrameStep
from .loading import model_spec
from .observer import EngineObserver, NullObserver
from .prefill import Prefill
from .prompts import PromptBuilder
from .requests import (
    NUM_CODE_GROUPS,
    Capability,
    EngineUnavailableError,
    FinishReason,
    GenerationFaultError,
    SamplingParams,
    SynthesisRequest,
    validate,
)
from .scheduler import Scheduler
from .sessions import Sessions
from .slot_cache import SlotKVCache
from .streaming_decoder import StreamingDecoder
from .streams import AudioChunk, Stream, StreamSink
from .voice_prompts import VoiceEncoder, with_voice_prompt

logger = logging.getLogger(__name__)

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
    mixed_steps: int = 0  # steps that held plain streams and voice-agent sessions in one batch
    finished: int = 0
    kv_bytes_per_slot: int = 0  # the talker's key/value storage one stream's slot takes


def is_repeating(history: list[int], window: int, max_period: int = 4) -> bool:
    """True when the last ``window`` codebook-0 tokens are one short pattern over and over."""
    if window <= 0 or len(history) < window:
        return False
    tail = history[-window:]
    # A pattern must show at least twice within the window to count as a loop.
    periods = range(1, min(max_period, window // 2) + 1)
    return any(all(tail[i] == tail[i % period] for i in range(window)) for period in periods)


def _slots_do_not_fit(talker: Any, config: EngineConfig) -> str:
    """The start-up error when the talker's key/value slots do not fit: one line naming the settings."""
    slots, length = config.max_active_streams, config.slot_max_length
    per_slot = kv_bytes_per_slot(
        talker.config, max_length=length, dtype_bytes=next(talker.parameters()).element_size()
    )
    device = talker.device
    free = ""
    if device.type == "cuda":
        free_bytes, total_bytes = torch.cuda.mem_get_info(device)
        free = f"; {device} has {free_bytes / 2**30:.1f} of {total_bytes / 2**30:.1f} GiB free"
    return (
        f"out of GPU memory for {slots} talker key/value slots of {length} tokens "
        f"({per_slot / 2**20:.1f} MiB each, {slots * per_slot / 2**30:.2f} GiB in all){free}: lower "
        "QWEN3_TTS_MAX_ACTIVE_STREAMS or QWEN3_TTS_SLOT_MAX_LENGTH (python -m benchmarks.capacity says how "
        "many streams fit)"
    )


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
        self.defaults = SamplingParams.from_generation_config(tts.generate_defaults or {})

        self._talker = tts.model.talker
        self._device = self._talker.device
        talker_config = tts.model.config.talker_config
        self._eos = int(talker_config.codec_eos_token_id)
        self._codebook_size = int(talker_config.code_predictor_config.vocab_size)
        try:
            self.cache = SlotKVCache.for_talker(
                self._talker, slots=config.max_active_streams, max_length=config.slot_max_length
            )
        except torch.OutOfMemoryError:
            release_cached_memory()
            raise ValueError(_slots_do_not_fit(self._talker, config)) from None
        self.stats.kv_bytes_per_slot = self.cache.bytes_per_slot
        logger.info(
            "talker key/value slots: %d x %d tokens, %.1f MiB per slot, %.2f GiB in all",
            config.max_active_streams,
            config.slot_max_length,
            self.cache.bytes_per_slot / 2**20,
            self.cache.bytes_per_slot * config.max_active_streams / 2**30,
        )
        predictor = frame_step_predictor(self._talker, config.code_predictor)
        self.frame_step = FrameStep(
            self._talker,
            self.cache,
            eos=self._eos,
            batch_buckets=config.graph_buckets,
            length_buckets=config.length_buckets,
            predictor=predictor,
            fault_injection=config.fault_injection,
        )
        self._decode_stream = torch.cuda.Stream(self._device) if self._device.type == "cuda" else None
        with on_device(self._device):
            self._capture_graphs()

        self._cond = threading.Condition()
        self._commands: deque[Callable[[], None]] = deque()
        self.scheduler = Scheduler(config, self._cond)
        self._sessions = Sessions(config, self._cond, self)
        self._prefill = Prefill(tts, capability, self.prompts)
        decode_readers = [self._decode_stream] if self._decode_stream is not None else []
        self.admission = Admission(self._prefill, self.cache, self.frame_step, decode_readers)
        self.voice_encoder: VoiceEncoder | None = None  # see _hold_for_voice
        self._holders: dict[int, Stream] = {}  # slot -> the stream holding it (stepping or paused)
        self._paused: set[int] = set()  # slots of sessions waiting for text (they keep their cache)
        self._ending: list[Stream] = []  # finished, slot freed, last chunk still to send
        self._poisoned: set[int] = set()  # slots given non-finite logits (fault_injection, tests only)
        self._in_flight: tuple[FrameHandle, list[Stream]] | None = None  # launched, results not taken yet
        self._running = False
        self._thread: threading.Thread | None = None

    def _capture_graphs(self) -> None:
        """The frame step's graphs, then the codec decoder's (each falls back to eager on its own)."""
        mode, on_gpu = self.config.cuda_graphs, graphs.can_capture(self._device)
        if mode == "off" or (mode == "auto" and not on_gpu):
            return
        if not on_gpu:
            raise ValueError("cuda_graphs=on needs a CUDA device; on a CPU: auto or off")
        if self.config.code_predictor == "reference":
            if mode == "on":
                raise ValueError("cuda_graphs=on needs code_predictor auto, static or cuda_graphs")
        else:
            self._capture("frame step", self.frame_step.capture, self.frame_step.drop_graphs)
        if isinstance(self.decoder, StreamingDecoder):
            decoder = self.decoder
            self._capture(
                "codec decoder",
                lambda: decoder.capture(self.config.graph_buckets, self.config.decoder_chunk_lengths),
                decoder.drop_graphs,
            )

    def _capture(self, what: str, capture: Callable[[], None], drop: Callable[[], None]) -> None:
        try:
            capture()
        except RuntimeError as error:
            if self.config.cuda_graphs == "on":
                raise
            # Serve without graphs rather than not at all; said once, loudly.
            logger.warning("CUDA graph capture of the %s failed (%s); it runs eagerly", what, error)
            drop()
            torch.cuda.empty_cache()

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
            refused = self.scheduler.submit(streams, self.cache.free_count)
            taken = [stream for stream in streams if stream not in refused]
            encoding = self._hold_for_voice(taken)
            self._cond.notify()
        self._encode_voices(encoding)
        for stream in refused:
            stream.sink.fail(EngineUnavailableError(_QUEUE_FULL.format(self.config.max_queued_streams)))

    def enqueue(self, stream: Stream) -> None:
        """Into the admission queue (a session whose first text arrived). Past ``max_queued_streams``
        waiting it is refused at once, as ``submit`` refuses a plain stream: sessions used to queue without
        a bound (100 STARTs on 2 slots and 2 places all waited out ``max_queue_wait_s``)."""
        with self._cond:
            refused = self.scheduler.submit([stream], self.cache.free_count)
            encoding = [] if refused else self._hold_for_voice([stream])
        self._encode_voices(encoding)
        if refused:
            self._sessions.forget(stream)
            stream.sink.fail(EngineUnavailableError(_QUEUE_FULL.format(self.config.max_queued_streams)))

    # A clone's reference clip is encoded by ``voice_encoder`` (the engine model's voice-prompt worker), off
    # this engine's thread: encoding it at admission, on the engine thread, paused every running stream for
    # the whole encoding (40 steps for a 30 s clip, measured). Without one (offline use) admission encodes.
    def _hold_for_voice(self, streams: list[Stream]) -> list[Stream]:
        if self.voice_encoder is None:
            return []
        encoding = [s for s in streams if s.request.ref_audio is not None and not s.encoding_voice]
        for stream in encoding:
            stream.encoding_voice = True
        return encoding

    def _encode_voices(self, streams: list[Stream]) -> None:
        assert self.voice_encoder is not None or not streams
        for stream in streams:
            self.voice_encoder.submit(  # type: ignore[union-attr]
                stream.request, lambda prompt, stream=stream: self._voice_encoded(stream, prompt)
            )

    def _voice_encoded(self, stream: Stream, prompt: Any) -> None:
        """The encoder's reply (its thread): the stream speaks with the prompt, or ends where it waits."""
        with self._cond:
            if isinstance(prompt, Exception):
                logger.warning("voice prompt extraction failed: %s", prompt)
                refused = isinstance(prompt, ValueError)  # the package refused the clip: say why
                stream.voice_error = prompt if refused else RuntimeError("voice prompt extraction failed")
            else:
                stream.request = with_voice_prompt(stream.request, prompt)
            stream.encoding_voice = False
            self._cond.notify()

    def run_in_engine(self, command: Callable[[], None]) -> None:
        """Run ``command`` on the engine thread before the next step (state is only touched there)."""
        with self._cond:
            self._commands.append(command)
            self._cond.notify()

    @property
    def active_count(self) -> int:
        """Streams stepped at the next frame."""
        return len(self._holders) - len(self._paused)

    @property
    def occupied_slots(self) -> int:
        """Streams holding or promised a slot: stepping, paused for text, or prepared for their prefill. A
        paused voice-agent session keeps its cache (memory) and comes back without asking."""
        return len(self._holders) + len(self.scheduler.prepared)

    @property
    def load(self) -> int:
        """What placement weighs (a front puts a new stream on the engine with the least): streams holding
        or promised a slot, those queued for one, and sessions waiting for their first text."""
        return self.occupied_slots + self.scheduler.queued + self._sessions.waiting_to_start

    def has_work(self) -> bool:
        busy = self.active_count or self._ending or self._in_flight
        return bool(busy or self._commands or self.scheduler.has_waiting())

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
        self._fail_everything(EngineUnavailableError(SHUTTING_DOWN))

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
        mixed_before = self.stats.mixed_steps
        with on_device(self._device):
            self._step()
        frames = self.stats.frames - frames_before
        if frames:
            self.observer.step_done(
                seconds=time.perf_counter() - started,
                frames=frames,
                active=self.active_count,
                queued=self.scheduler.queued,
                paused=len(self._paused),
                mixed=self.stats.mixed_steps > mixed_before,
            )

    def _step(self) -> None:
        self._run_commands()
        self._sessions.expire()
        self._drop_cancelled()  # first: a slot a client gave up goes to the next in line at once
        self._admit()
        self._pause_starved()
        try:
            if self.active_count or self._in_flight:
                started = time.perf_counter()
                self._advance()
                self.scheduler.track_frame_time(time.perf_counter() - started)
            else:
                self._emit_and_retire()
        except torch.OutOfMemoryError:
            self._recover_from_oom()

    def _run_commands(self) -> None:
        with self._cond:
            commands = list(self._commands)
            self._commands.clear()
        for command in commands:
            command()

    # ------------------------------------------------------------------------------------------ frames
    def _advance(self) -> None:
        """Launch a frame for every active stream; while the device computes it, take the previous frame's
        results and decode and send the chunks that are due."""
        stepping = sorted(
            (s for slot, s in self._holders.items() if slot not in self._paused), key=lambda s: s.slot or 0
        )
        launched = (self._launch(stepping), stepping) if stepping else None
        self._collect_in_flight()
        self._in_flight = launched
        self._emit_and_retire()

    def _collect_in_flight(self) -> None:
        if self._in_flight is not None:
            previous, self._in_flight = self._in_flight, None
            self._collect(*previous)

    def _launch(self, stepping: list[Stream]) -> FrameHandle:
        assert self._prefill.tts_pad is not None
        rows = max(s.slot for s in stepping if s.slot is not None) + 1
        texts = [self._prefill.tts_pad] * rows
        for stream in stepping:
            assert stream.slot is not None and stream.text_track is not None
            embedding = stream.text_track.next_embedding()
            if embedding is not None:
                texts[stream.slot] = embedding
            if self.config.fault_injection:
                self._inject_fault(stream)
        self.frame_step.set_text_inputs(texts)
        longest = max(s.cache_length for s in stepping)
        handle = self.frame_step.launch(rows, longest, [s.sampling for s in stepping])
        sessions = sum(s.session_key is not None for s in stepping)
        self.stats.mixed_steps += 0 < sessions < len(stepping)
        for stream in stepping:
            stream.cache_length += 1
        return handle

    def _inject_fault(self, stream: Stream) -> None:
        """Tests only (``fault_injection``): non-finite logits from the third frame of a marked request."""
        slot = stream.slot
        launched = stream.cache_length - stream.prompt_length  # frames launched, the last maybe in flight
        if slot not in self._poisoned and FAULT_MARKER in stream.request.text and launched >= 2:
            assert slot is not None
            self.frame_step.poison(slot)
            self._poisoned.add(slot)

    def _collect(self, handle: FrameHandle, stepping: list[Stream]) -> None:
        """The frame's results (one host copy): codes appended, finished and failed streams leave. A stream
        that left since the launch (cancelled, ended in the frame before, failed) is skipped."""
        rows = self.frame_step.collect(handle)
        made = 0
        for stream in stepping:
            if stream.slot is None or stream.finished:
                continue
            row = rows[stream.slot]
            if self._is_poisoned(row):
                self._fail_poisoned(stream)
                continue
            stream.frames.append(handle.codes[stream.slot])
            stream.cb0_history.append(row[0])
            made += 1
            self._mark_finished(stream, row[NEXT_CB0])
            if stream.finished:
                self._leave(stream)
                self._ending.append(stream)
        self.stats.steps += 1
        self.stats.frames += made

    def _is_poisoned(self, row: list[int]) -> bool:
        """A row whose numbers went bad: non-finite hidden state or logits, a code outside the codebook,
        or a next codebook-0 token that is a control code other than end-of-speech (only non-finite
        scores can make the sampler pick one). Decoding it would fail the whole batch's decoder call."""
        frame, next_cb0 = row[:NUM_CODE_GROUPS], row[NEXT_CB0]
        out_of_codebook = any(not 0 <= code < self._codebook_size for code in frame)
        bad_next = not 0 <= next_cb0 < self._codebook_size and next_cb0 != self._eos
        return bool(row[BAD]) or out_of_codebook or bad_next

    def _fail_poisoned(self, stream: Stream) -> None:
        """A poisoned stream fails alone; the rest of the batch steps on."""
        logger.warning("stream failed: non-finite values at frame %d", stream.frame_count)
        self._leave(stream, scrub=True)
        self._sessions.forget(stream)
        stream.sink.fail(GenerationFaultError(_NON_FINITE))
        self.stats.finished += 1

    def _mark_finished(self, stream: Stream, next_cb0: int) -> None:
        if next_cb0 == self._eos:
            stream.finish_reason = FinishReason.STOP
        elif stream.frame_count >= stream.max_frames or self._slot_full(stream):
            stream.finish_reason = FinishReason.LENGTH
        elif is_repeating(stream.cb0_history, self.config.repetition_window):
            stream.finish_reason = FinishReason.REPETITION

    def _slot_full(self, stream: Stream) -> bool:
        """No column left in the stream's slot for another frame."""
        return stream.prompt_length + stream.frame_count >= self.cache.max_length

    # ------------------------------------------------------------------------------------- admission
    def _admit(self) -> None:
        entering = self.scheduler.admit(self.cache.free_count, self.active_count, self._left_the_queue)
        for group in _by_text_mode(entering):
            ready, refused = self.admission.prepare(group, self._sessions.input_open)
            self.scheduler.prepared.extend(ready)
            self._refuse(refused)
        batch = self.scheduler.next_prefill(prompt_length)
        if batch:
            joined, refused = self.admission.join(batch)
            for stream in joined:
                self._holders[stream.slot] = stream  # type: ignore[index]
            self._refuse(refused)
            if joined:
                self.stats.prefill_calls += 1
                self.stats.prefilled_requests += len(joined)
        self.stats.max_active = max(self.stats.max_active, self.active_count)

    def _left_the_queue(self, stream: Stream) -> bool:
        """True for a waiting stream whose client went away or that waited past ``max_queue_wait_s``:
        it is ended here, before it costs a prefill."""
        if stream.sink.is_cancelled():
            stream.finish_reason = FinishReason.CANCELLED
            self._send(stream, samples=None)
            return True
        if stream.voice_error is not None:
            self._sessions.forget(stream)
            stream.sink.fail(stream.voice_error)
            return True
        waited = time.monotonic() - (stream.queued_at or time.monotonic())
        if waited > self.config.max_queue_wait_s:
            self._sessions.forget(stream)
            stream.sink.fail(EngineUnavailableError(_QUEUE_WAIT.format(self.config.max_queue_wait_s)))
            return True
        return False

    def _refuse(self, refusals: list[Refusal]) -> None:
        for refusal in refusals:
            self._sessions.forget(refusal.stream)
            refusal.stream.sink.fail(refusal.error)

    # ------------------------------------------------------------------------------ leaving the batch
    def _leave(self, stream: Stream, *, scrub: bool = False) -> None:
        """Free the stream's slot (nothing else moves)."""
        slot = stream.slot
        if slot is None:
            return
        self._holders.pop(slot, None)
        self._paused.discard(slot)
        self._poisoned.discard(slot)
        self.frame_step.release(slot, scrub=scrub)
        stream.slot = None

    def _drop_cancelled(self) -> None:
        """A client that went away frees its slot before the next frame is computed."""
        cancelled = [
            s for slot, s in self._holders.items() if slot not in self._paused and s.sink.is_cancelled()
        ]
        for stream in cancelled:
            stream.finish_reason = FinishReason.CANCELLED
            self._leave(stream)
            self._send(stream, samples=None)
        self.stats.finished += len(cancelled)

    def _pause_starved(self) -> None:
        """Streams whose open text ran dry stop stepping, keeping their slot, until text arrives."""
        for slot, stream in self._holders.items():
            if slot in self._paused or stream.finished:
                continue
            assert stream.text_track is not None
            if stream.text_track.starved(stream.lookahead or 0):
                self._paused.add(slot)
                self.frame_step.set_active(slot, False)

    def resume(self, stream: Stream) -> None:
        """Engine thread only: a paused stream steps again from the next frame."""
        if stream.slot is not None and stream.slot in self._paused:
            self._paused.discard(stream.slot)
            self.frame_step.set_active(stream.slot, True)

    def _emit_and_retire(self) -> None:
        """Decode and send the chunks that are due; finished streams send their last and are done."""
        candidates = [*self._holders.values(), *self._ending]
        due = [s for s in candidates if self._chunk_due(s)]
        if due:
            self._send_chunks(due)
        if self._ending:
            self.stats.finished += len(self._ending)
            self._ending = []

    def _chunk_due(self, stream: Stream) -> bool:
        if stream.finished:
            return True
        return stream.frame_count - stream.emitted_frames >= self.config.chunk_size(stream.chunks_sent)

    def _send_chunks(self, streams: list[Stream]) -> None:
        # On a GPU the decoder runs on a stream of its own, beside the frame just launched: its chunks do
        # not wait for that frame. Its inputs are frames already collected (their copy has completed).
        with torch.cuda.stream(self._decode_stream) if self._decode_stream is not None else nullcontext():
            audio = self.decoder.decode_streams(streams)
        for stream, samples in zip(streams, audio, strict=True):
            self._send(stream, samples)

    def _send(self, stream: Stream, samples: Any) -> None:
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
            self._sessions.forget(stream)
            self.observer.finished(chunk.finish_reason)
        stream.sink.send(chunk)

    # ------------------------------------------------------------------------------ voice-agent sessions
    def open_sessions(self, entries: list[tuple[int, Stream, bool]]) -> None:
        """Start sessions (key, stream, input already closed); their text may keep arriving."""
        self._sessions.open(entries)

    def append_text(self, key: int, fragment: str, *, flush: bool = False, close: bool = False) -> None:
        """Queue text for a running session; raises InvalidRequestError for an unknown or finished one."""
        self._sessions.append(key, fragment, flush=flush, close=close)

    # SessionHost: what sessions need of the engine (engine thread).
    def end_unstarted(self, stream: Stream) -> None:
        self._send(stream, samples=None)

    def end_waiting(self, stream: Stream) -> None:
        """A session waiting for text ends (idle or cancelled): the audio of frames made so far, then the
        end; its slot is freed."""
        paused = stream.slot is not None and stream.slot in self._paused
        if paused and self._in_flight is not None and stream in self._in_flight[1]:
            self._collect_in_flight()  # its last frame is still on the device
        self._leave(stream)
        if paused and stream.finish_reason is not FinishReason.CANCELLED:
            self._send_chunks([stream])
        else:
            self._send(stream, samples=None)
        self.stats.finished += 1

    def is_waiting(self, stream: Stream) -> bool:
        return stream.slot is not None and stream.slot in self._paused

    def text_embeddings(self, text: str) -> torch.Tensor:
        ids = self.tts.processor(text=text, return_tensors="pt")["input_ids"][0].tolist()
        return self.prompts.text_embeddings_for(ids)

    def end_of_text(self) -> torch.Tensor:
        assert self._prefill.tts_eos is not None
        return self._prefill.tts_eos

    def text_grew(self, stream: Stream, closed: bool) -> None:
        if closed and stream.slot is not None:
            self.frame_step.close_text(stream.slot)
        self.resume(stream)

    # ---------------------------------------------------------------------------------------- faults
    def _recover_from_oom(self) -> None:
        self._in_flight = None
        failing = [s for slot, s in self._holders.items() if slot not in self._paused] + self._ending
        logger.error("out of memory with %d active streams; failing them", len(failing))
        for stream in failing:
            self._leave(stream, scrub=True)
        self._ending = []
        release_cached_memory()
        for stream in failing:
            self._sessions.forget(stream)
            stream.sink.fail(EngineUnavailableError(OUT_OF_MEMORY))

    def _fail_everything(self, error: Exception) -> None:
        streams = self.scheduler.drain() + list(self._holders.values()) + self._ending
        streams += self._sessions.drain_unqueued()
        self._holders, self._paused, self._ending, self._poisoned = {}, set(), [], set()
        self._in_flight = None
        self.frame_step.release_all()
        for stream in streams:
            stream.slot = None
            stream.sink.fail(error)


def on_device(device: torch.device) -> AbstractContextManager[Any]:
    """``device`` as the current CUDA device. That is per thread (the engine steps on a thread of its own,
    tests and offline use on theirs), and the stream and event calls that take no device use it: an engine
    on the second GPU stepped with the first one current would record its events on the wrong GPU."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def _by_text_mode(streams: list[Stream]) -> list[list[Stream]]:
    groups: dict[bool, list[Stream]] = {}
    for stream in streams:
        groups.setdefault(stream.request.text_open, []).append(stream)
    return list(groups.values())
