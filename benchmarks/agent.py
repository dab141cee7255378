"""Voice-agent scenario: sessions that take their text while they speak, as an LLM agent would feed them.

Each session is one ``session_id`` on ``custom_voice_session`` (docs/triton-io-contract.md, "Voice-agent
sessions") over one gRPC bidirectional stream (``tritonclient.grpc.aio``): the START request carries the
first word and the voice, then every following word is sent at ``words_per_s`` (the agent's token rate),
the last one with END. The START request's responses carry all the audio; each later request is
acknowledged with an empty FINAL response.

Per session: time from the first text fragment to the first audio, time from the last fragment to the end
of the audio, and playback underruns (:func:`benchmarks.stats.playback_underruns`). At each concurrency
level, ``concurrency`` sessions run at once, ``rounds`` times.

Against a running stack: ``python -m benchmarks.agent --triton 127.0.0.1:8001 -c 1 4 --tps 8``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.stats import SessionRecord, summarize_sessions
from benchmarks.texts import SHORT_TEXTS

logger = logging.getLogger(__name__)

MODEL = "custom_voice_session"


class AgentError(RuntimeError):
    """A session failed (error response, a stream that ended early)."""


def fragments(text: str) -> list[str]:
    """The text as an agent streams it: one fragment per word, each after the first with its leading space
    (joined back they give the text with single spaces)."""
    words = text.split()
    return [word if index == 0 else " " + word for index, word in enumerate(words)]


@dataclass
class AgentConfig:
    concurrencies: list[int]
    triton_url: str
    words_per_s: float = 8.0
    rounds: int = 1  # sessions per level: rounds x concurrency
    warmup: int = 1
    texts: tuple[str, ...] = SHORT_TEXTS
    speaker: str = "ryan"
    language: str = "english"
    max_new_tokens: int | None = None  # None: the server's budget, which grows with the text received
    seed: int = 0
    timeout_s: float = 300.0
    model: str = MODEL

    def public(self) -> dict[str, Any]:
        values = asdict(self)
        values["texts"] = len(self.texts)
        return values


class _Ids:
    """Session ids unlikely to meet another client's on the same server."""

    def __init__(self) -> None:
        self._next = itertools.count(random.randrange(1 << 40, 1 << 52))

    def __call__(self) -> int:
        return next(self._next)


async def run_session(
    client: Any, config: AgentConfig, text: str, record: SessionRecord, session_id: int, seed: int
) -> None:
    """Stream ``text`` word by word into one session and follow its audio to the end (fills ``record``)."""
    from qwen3_tts_client.triton import build_inputs

    from benchmarks.load import _triton_chunk
    from qwen3_tts_serving.contract import has_outputs, is_final

    parts = fragments(text) or [""]
    record.words = len(parts)
    prefix = uuid.uuid4().hex[:12]
    start_id = f"{prefix}-start"
    parameters = {"triton_enable_empty_final_response": True}
    first_sent: list[float] = []  # perf_counter of the first fragment, set by the request generator
    voice = {
        "speaker": config.speaker,
        "language": config.language,
        "max_new_tokens": config.max_new_tokens,
        "seed": seed,
    }

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if index:
                delay = first_sent[0] + index / config.words_per_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            request = {
                "model_name": config.model,
                "inputs": build_inputs(
                    {
                        "session_id": session_id,
                        "session_start": index == 0,
                        "session_end": last,
                        "text": part,
                        **(voice if index == 0 else {}),
                    }
                ),
                "request_id": start_id if index == 0 else f"{prefix}-{index}",
                "parameters": parameters,
            }
            now = time.perf_counter()
            if index == 0:
                first_sent.append(now)
            if last:
                record.last_fragment_s = now - first_sent[0]
            yield request

    responses = client.stream_infer(requests(), stream_timeout=config.timeout_s)
    acknowledged, audio_done, finished = 0, False, False
    try:
        async for result, error in responses:
            if error is not None:
                raise AgentError(f"Triton: {error}")
            arrival = time.perf_counter() - first_sent[0]
            if result.get_response().id != start_id:
                acknowledged += is_final(result)
            else:
                if has_outputs(result):
                    chunk = _triton_chunk(result)
                    if chunk.finish_reason:
                        record.finish_reason = chunk.finish_reason
                    if chunk.samples > 0:
                        seconds = chunk.samples / chunk.sample_rate
                        record.chunks += 1
                        record.arrivals_s.append(arrival)
                        record.durations_s.append(seconds)
                        record.audio_s += seconds
                        record.end_s = arrival
                        if record.first_audio_s is None:
                            record.first_audio_s = arrival
                audio_done |= is_final(result)
            if audio_done and acknowledged >= len(parts) - 1:
                finished = True
                return
        raise AgentError(
            f"the stream ended after {acknowledged}/{len(parts) - 1} acknowledgements, "
            f"audio {'complete' if audio_done else 'incomplete'}"
        )
    finally:
        if not finished:
            responses.cancel()


async def measure_session(
    client: Any,
    config: AgentConfig,
    text: str,
    *,
    concurrency: int,
    index: int,
    level_start: float,
    session_id: int,
) -> SessionRecord:
    record = SessionRecord(concurrency=concurrency, index=index, start_s=time.perf_counter() - level_start)
    try:
        await asyncio.wait_for(
            run_session(client, config, text, record, session_id, config.seed + index), config.timeout_s
        )
    except asyncio.TimeoutError:
        record.error = f"no end of session within {config.timeout_s:g} s"
    except Exception as exc:  # one failed session is one error of the run, and the run goes on
        record.error = f"{type(exc).__name__}: {exc}"[:500]
    if record.error:
        record.end_s = None
        logger.warning("agent session %d failed: %s", index, record.error)
    return record


async def run_agent_level(client: Any, config: AgentConfig, concurrency: int, ids: _Ids) -> dict[str, Any]:
    """``concurrency`` sessions at once, ``rounds`` sessions per slot back to back."""
    start = time.perf_counter()
    numbers = itertools.count()
    total = concurrency * max(config.rounds, 1)
    records: list[SessionRecord] = []

    async def worker() -> None:
        while (index := next(numbers)) < total:
            records.append(
                await measure_session(
                    client,
                    config,
                    config.texts[index % len(config.texts)],
                    concurrency=concurrency,
                    index=index,
                    level_start=start,
                    session_id=ids(),
                )
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall_s = time.perf_counter() - start
    records.sort(key=lambda r: r.index)
    summary = summarize_sessions(records, wall_s)
    summary["records"] = [record.to_json() for record in records]
    logger.info(
        "agent c=%d: %d/%d ok, first audio p50 %s s, tail p50 %s s, %d underruns",
        concurrency,
        summary["ok"],
        summary["sessions"],
        _fmt(summary["first_audio_s"]["p50"]),
        _fmt(summary["tail_s"]["p50"]),
        summary["underruns"],
    )
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


async def run_agent(config: AgentConfig) -> dict[str, Any]:
    """Every concurrency level. Returns ``{"config": ..., "levels": {concurrency: summary}}``."""
    if config.words_per_s <= 0:
        raise ValueError("words_per_s must be positive")
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(config.triton_url)
    ids = _Ids()
    levels: dict[int, Any] = {}
    try:
        for index in range(config.warmup):
            record = await measure_session(
                client,
                config,
                config.texts[index % len(config.texts)],
                concurrency=1,
                index=index,
                level_start=0.0,
                session_id=ids(),
            )
            if record.error:
                raise AgentError(f"warm-up session failed: {record.error}")
        for concurrency in config.concurrencies:
            levels[concurrency] = await run_agent_level(client, config, concurrency, ids)
    finally:
        await client.close()
    return {"config": config.public(), "levels": levels}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--triton", required=True, help="host:port of Triton's gRPC endpoint")
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--tps", type=float, default=8.0, help="words per second each agent streams")
    parser.add_argument("--rounds", type=int, default=1, help="sessions per level: rounds x concurrency")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("-o", "--out", help="write the JSON result here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    args = _parser().parse_args(argv)
    config = AgentConfig(
        concurrencies=args.concurrency,
        triton_url=args.triton,
        words_per_s=args.tps,
        rounds=args.rounds,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        timeout_s=args.timeout,
    )
    result = asyncio.run(run_agent(config))
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(json.dumps(result, indent=2, default=str))
    from benchmarks.report import agent_lines

    print("\n".join(agent_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
