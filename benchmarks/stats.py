"""The arithmetic of the benchmarks: percentiles, playback underruns, per-level summaries and ratios.

Pure functions over plain numbers (no I/O), so that each one is unit-tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# A chunk that arrives this close after the buffer ran dry is not counted as an audible gap.
UNDERRUN_TOLERANCE_S = 1e-3


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks (numpy's default);
    None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Playback:
    underruns: int  # times the buffer ran dry before the next chunk arrived
    stall_s: float  # total silence caused by them


def playback_underruns(
    arrivals_s: Sequence[float],
    durations_s: Sequence[float],
    prebuffer_s: float = 0.0,
    tolerance_s: float = UNDERRUN_TOLERANCE_S,
) -> Playback:
    """Simulate real-time playback of one stream's chunks and count buffer underruns.

    Playback starts ``prebuffer_s`` after the first audio arrives and plays every chunk at real time; when
    the buffer runs dry before the next chunk has arrived, that is one underrun, and playback resumes when
    the chunk arrives. Chunks without audio (the closing empty chunk) cannot cause an audible gap.
    """
    if len(arrivals_s) != len(durations_s):
        raise ValueError("arrivals and durations must have the same length")
    audible = [(t, d) for t, d in zip(arrivals_s, durations_s, strict=True) if d > 0]
    if not audible:
        return Playback(0, 0.0)
    first_arrival, first_duration = audible[0]
    buffer_ends = first_arrival + prebuffer_s + first_duration
    underruns, stall = 0, 0.0
    for arrival, duration in audible[1:]:
        if arrival > buffer_ends + tolerance_s:
            underruns += 1
            stall += arrival - buffer_ends
            buffer_ends = arrival + duration
        else:
            buffer_ends += duration
    return Playback(underruns, stall)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


@dataclass(kw_only=True)
class StreamedAudio:
    """What one stream received, as the request and session records both keep it: its audio chunks
    (arrival times from sending and durations, in seconds) and how it ended."""

    audio_s: float = 0.0
    chunks: int = 0
    finish_reason: str = ""
    error: str | None = None
    arrivals_s: list[float] = field(default_factory=list)
    durations_s: list[float] = field(default_factory=list)

    @property
    def playback(self) -> Playback:
        return playback_underruns(self.arrivals_s, self.durations_s)

    def _ending_json(self) -> dict[str, Any]:
        """The chunks, their playback and the ending, as the last keys of a record's ``to_json``."""
        playback = self.playback
        return {
            "chunks": self.chunks,
            "finish_reason": self.finish_reason,
            "underruns": playback.underruns,
            "stall_s": playback.stall_s,
            "error": self.error,
        }


@dataclass
class RequestRecord(StreamedAudio):
    """One streamed request as the load tool saw it. Times are seconds from sending the request."""

    path: str
    concurrency: int
    index: int
    start_s: float  # since the level started
    ttfa_s: float | None = None
    total_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.total_s is not None

    @property
    def rtf(self) -> float | None:
        """Real-time factor: generation time over audio duration (below 1 = faster than real time)."""
        return ratio(self.total_s, self.audio_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start_s": self.start_s,
            "ttfa_s": self.ttfa_s,
            "total_s": self.total_s,
            "audio_s": self.audio_s,
            "rtf": self.rtf,
            **self._ending_json(),
        }


def _outcomes(records: Sequence[StreamedAudio], ok: Sequence[StreamedAudio]) -> dict[str, Any]:
    """How many of a level's streams ended well, how many failed, and the first few distinct errors."""
    return {
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "error_messages": sorted({r.error for r in records if r.error})[:5],
    }


def _finish_reasons(ok: Sequence[StreamedAudio]) -> dict[str, int]:
    """Streams by why they ended ("?" where the server did not say)."""
    finish: dict[str, int] = {}
    for record in ok:
        finish[record.finish_reason or "?"] = finish.get(record.finish_reason or "?", 0) + 1
    return finish


def _spread(values: Sequence[float], qs: Sequence[int] = (50, 90, 95, 99)) -> dict[str, float | None]:
    return {f"p{q}": percentile(values, q) for q in qs}


def summarize_level(records: Sequence[RequestRecord], wall_s: float) -> dict[str, Any]:
    """The figures of one (path, concurrency) level: latency percentiles over successful requests, RTF per
    stream, aggregate audio seconds per wall second, errors and underruns."""
    ok = [r for r in records if r.ok]
    ttfa = [r.ttfa_s for r in ok if r.ttfa_s is not None]
    total = [r.total_s for r in ok if r.total_s is not None]
    rtfs = [rtf for r in ok if (rtf := r.rtf) is not None]
    audio = sum(r.audio_s for r in ok)
    playbacks = [r.playback for r in ok]
    return {
        "requests": len(records),
        **_outcomes(records, ok),
        "wall_s": wall_s,
        "ttfa_s": _spread(ttfa),
        "total_s": _spread(total),
        "rtf": {"p50": percentile(rtfs, 50), "max": max(rtfs) if rtfs else None},
        "audio_s": audio,
        "audio_s_per_s": ratio(audio, wall_s),
        "requests_per_s": ratio(len(ok), wall_s),
        "underruns": sum(p.underruns for p in playbacks),
        "streams_with_underruns": sum(1 for p in playbacks if p.underruns),
        "stall_s": sum(p.stall_s for p in playbacks),
        "finish_reasons": _finish_reasons(ok),
    }


def cpu_figures(cpu_s: Mapping[str, float | None], audio_s: float, requests: int) -> dict[str, Any]:
    """Server CPU time of a level: audio seconds per Triton CPU second (a throughput that other load on
    the machine moves much less than the wall-clock one) and gateway CPU per request."""
    gateway = cpu_s.get("gateway")
    return {
        "server_cpu_s": dict(cpu_s),
        "audio_s_per_triton_cpu_s": ratio(audio_s, cpu_s.get("triton")),
        "gateway_cpu_ms_per_request": None if gateway is None or not requests else gateway * 1000 / requests,
    }


# ------------------------------------------------------------------------------------------- ratios
Levels = Mapping[int, Mapping[str, Any]]  # concurrency -> summary of that level


def _get(summary: Mapping[str, Any] | None, *keys: str) -> float | None:
    value: Any = summary
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, int | float) else None


def scaling(levels: Levels, key: Sequence[str] = ("audio_s_per_s",)) -> dict[int, float | None]:
    """Throughput at each concurrency over throughput at the lowest one (the batching gain)."""
    if not levels:
        return {}
    base = _get(levels[min(levels)], *key)
    return {c: ratio(_get(levels[c], *key), base) for c in sorted(levels)}


def batching_gain(levels: Levels, high: int, low: int = 1, key: str = "audio_s_per_s") -> float | None:
    """Aggregate audio seconds per second (or per CPU second with ``key="audio_s_per_triton_cpu_s"``) at
    ``high`` concurrency over that at ``low``."""
    return ratio(_get(levels.get(high), key), _get(levels.get(low), key))


def overhead(through: Levels, direct: Levels, metric: str, q: str = "p50") -> dict[int, float | None]:
    """Per concurrency present in both: ``metric``'s ``q`` through the gateway over direct to Triton."""
    common = sorted(set(through) & set(direct))
    return {c: ratio(_get(through[c], metric, q), _get(direct[c], metric, q)) for c in common}


def overhead_ms(through: Levels, direct: Levels, metric: str, q: str = "p50") -> dict[int, float | None]:
    """The same comparison as a difference in milliseconds."""
    result: dict[int, float | None] = {}
    for c in sorted(set(through) & set(direct)):
        a, b = _get(through[c], metric, q), _get(direct[c], metric, q)
        result[c] = None if a is None or b is None else (a - b) * 1000
    return result


def ttfa_over_total(levels: Levels, q: str = "p50") -> dict[int, float | None]:
    """Streaming time to first audio over the full-request latency (time to the last chunk)."""
    return {c: ratio(_get(levels[c], "ttfa_s", q), _get(levels[c], "total_s", q)) for c in sorted(levels)}


# ------------------------------------------------------------------------------------------ voice agent
@dataclass
class SessionRecord(StreamedAudio):
    """One voice-agent session (text streamed word by word while it speaks). Times are seconds from
    sending the first text fragment."""

    concurrency: int
    index: int
    start_s: float  # since the level started
    words: int = 0
    last_fragment_s: float | None = None  # when the last fragment (END) was sent
    first_audio_s: float | None = None
    end_s: float | None = None  # arrival of the last audio chunk

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_s is not None

    @property
    def tail_s(self) -> float | None:
        """From sending the last fragment to the end of the audio."""
        if self.end_s is None or self.last_fragment_s is None:
            return None
        return self.end_s - self.last_fragment_s

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start_s": self.start_s,
            "words": self.words,
            "last_fragment_s": self.last_fragment_s,
            "first_audio_s": self.first_audio_s,
            "end_s": self.end_s,
            "tail_s": self.tail_s,
            "audio_s": self.audio_s,
            **self._ending_json(),
        }


def summarize_sessions(records: Sequence[SessionRecord], wall_s: float) -> dict[str, Any]:
    """The figures of one voice-agent concurrency level: first audio after the first fragment, the tail
    after the last one (p50/p90 over successful sessions), playback underruns per stream, errors."""
    ok = [r for r in records if r.ok]
    first = [r.first_audio_s for r in ok if r.first_audio_s is not None]
    tails = [tail for r in ok if (tail := r.tail_s) is not None]
    playbacks = [r.playback for r in ok]
    underruns = sum(p.underruns for p in playbacks)
    return {
        "sessions": len(records),
        **_outcomes(records, ok),
        "wall_s": wall_s,
        "first_audio_s": _spread(first, (50, 90)),
        "tail_s": _spread(tails, (50, 90)),
        "audio_s": sum(r.audio_s for r in ok),
        "spoke_before_text_end": sum(
            1
            for r in ok
            if r.first_audio_s is not None
            and r.last_fragment_s is not None
            and r.first_audio_s < r.last_fragment_s
        ),
        "underruns": underruns,
        "underruns_per_stream": ratio(underruns, len(playbacks)),
        "streams_with_underruns": sum(1 for p in playbacks if p.underruns),
        "stall_s": sum(p.stall_s for p in playbacks),
        "finish_reasons": _finish_reasons(ok),
    }
