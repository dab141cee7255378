"""The project's load tool: N concurrent streaming syntheses against the gateway and/or Triton directly.

Paths (the same requests, the same model, ``custom_voice``):

- ``triton``: gRPC bidirectional streaming with ``tritonclient.grpc.aio`` (one gRPC stream per request,
  the empty FINAL response enabled), as the gateway itself talks to Triton;
- ``gateway``: ``POST /synthesize/stream`` NDJSON lines (httpx), or with ``transport="ws"`` the
  ``/ws/synthesize`` WebSocket (binary PCM frames, one socket per worker, reused).

Per request it records the arrival time and duration of every audio chunk, and from them time to first
audio (TTFA), total latency, audio seconds, real-time factor and playback underruns
(:mod:`benchmarks.stats`). Around each level it reads Triton's statistics for the model.

Also a command against a running stack (``make serve``):
``python -m benchmarks.load --triton 127.0.0.1:8001 --gateway http://127.0.0.1:8080 -c 1 4``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import httpx

from benchmarks import cpu, enginestats, tritonstats
from benchmarks.stats import RequestRecord, cpu_figures, summarize_level
from benchmarks.texts import SHORT_TEXTS, Job, jobs, requests_per_level

logger = logging.getLogger(__name__)

Transport = Literal["ndjson", "ws"]
MODEL = "custom_voice"


class LoadError(RuntimeError):
    """A request failed (error status, error line, error response)."""


@dataclass(frozen=True)
class Chunk:
    samples: int
    sample_rate: int
    finish_reason: str = ""


class Target(Protocol):
    name: str

    def stream(self, job: Job) -> AsyncIterator[Chunk]: ...

    async def aclose(self) -> None: ...


# ------------------------------------------------------------------------------------------ targets
class TritonTarget:
    """Direct gRPC streaming to Triton (create inside the running event loop)."""

    name = "triton"

    def __init__(self, url: str, model: str = MODEL, timeout_s: float = 300.0) -> None:
        import tritonclient.grpc.aio as grpcaio

        self.model = model
        self.timeout_s = timeout_s
        self.client = grpcaio.InferenceServerClient(url)

    async def stream(self, job: Job) -> AsyncIterator[Chunk]:
        from qwen3_tts_client.triton import build_inputs

        from qwen3_tts_serving.contract import has_outputs, is_final

        request = {
            "model_name": self.model,
            "inputs": build_inputs(job.triton_fields()),
            "request_id": uuid.uuid4().hex,
            "parameters": {"triton_enable_empty_final_response": True},
        }

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield request

        responses = self.client.stream_infer(requests(), stream_timeout=self.timeout_s)
        finished = False
        try:
            async for result, error in responses:
                if error is not None:
                    raise LoadError(f"Triton: {error}")
                if has_outputs(result):
                    yield _triton_chunk(result)
                if is_final(result):
                    finished = True
                    return
        finally:
            if not finished:
                responses.cancel()

    async def aclose(self) -> None:
        await self.client.close()


def _triton_chunk(result: Any) -> Chunk:
    audio = result.as_numpy("audio")
    reason = result.as_numpy("finish_reason").reshape(-1)[0]
    return Chunk(
        samples=int(audio.size),
        sample_rate=int(result.as_numpy("sample_rate").reshape(-1)[0]),
        finish_reason=reason.decode() if isinstance(reason, bytes) else str(reason),
    )


def _auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class GatewayNdjsonTarget:
    """``POST /synthesize/stream``: one NDJSON line per chunk, audio as base64 PCM s16le."""

    name = "gateway"

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 300.0) -> None:
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers=_auth_headers(api_key),
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
            trust_env=False,  # never through a proxy from the environment
        )

    async def stream(self, job: Job) -> AsyncIterator[Chunk]:
        async with self.client.stream("POST", "/synthesize/stream", json=job.gateway_body()) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode("utf-8", "replace")
                raise LoadError(f"HTTP {response.status_code}: {body[:300]}")
            async for line in response.aiter_lines():
                if line.strip():
                    yield _ndjson_chunk(json.loads(line))

    async def aclose(self) -> None:
        await self.client.aclose()


def _ndjson_chunk(message: dict[str, Any]) -> Chunk:
    """A chunk line, or the closing ``{"type": "done", ...}`` line (no audio), or an in-band error."""
    if "error" in message:
        error = message["error"]
        raise LoadError(f"gateway: {error.get('message', error) if isinstance(error, dict) else error}")
    audio = message.get("audio") or ""
    return Chunk(
        samples=len(base64.b64decode(audio)) // 2,
        sample_rate=int(message.get("sample_rate") or 24000),
        finish_reason=message.get("finish_reason") or "",
    )


class GatewayWebSocketTarget:
    """``/ws/synthesize`` with binary PCM frames; sockets are kept in a pool and reused by the workers."""

    name = "gateway"

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 300.0) -> None:
        self.url = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws/synthesize"
        self.headers = _auth_headers(api_key)
        self.timeout_s = timeout_s
        self._pool: list[Any] = []

    async def _acquire(self) -> Any:
        from websockets.asyncio.client import connect

        if self._pool:
            return self._pool.pop()
        return await connect(self.url, additional_headers=self.headers, max_size=None)

    async def stream(self, job: Job) -> AsyncIterator[Chunk]:
        socket = await self._acquire()
        reusable = False
        try:
            await socket.send(json.dumps({**job.gateway_body(), "stream_format": "binary"}))
            rate = 24000
            while True:
                message = await socket.recv()
                if isinstance(message, bytes):
                    yield Chunk(samples=len(message) // 2, sample_rate=rate)
                    continue
                event = json.loads(message)
                if event.get("type") == "start":
                    rate = int(event["sample_rate"])
                elif event.get("type") == "done":
                    reusable = True
                    yield Chunk(samples=0, sample_rate=rate, finish_reason=event.get("finish_reason") or "")
                    return
                elif event.get("type") == "error":
                    reusable = True
                    raise LoadError(f"gateway: {event.get('message')}")
        finally:
            if reusable:
                self._pool.append(socket)
            else:
                await socket.close()

    async def aclose(self) -> None:
        sockets, self._pool = self._pool, []
        for socket in sockets:
            await socket.close()


# ------------------------------------------------------------------------------------------ measuring
async def _consume(target: Target, job: Job, record: RequestRecord, sent: float) -> None:
    async with contextlib.aclosing(target.stream(job)) as chunks:
        async for chunk in chunks:
            if chunk.finish_reason:
                record.finish_reason = chunk.finish_reason
            if chunk.samples <= 0:
                continue
            arrival = time.perf_counter() - sent
            seconds = chunk.samples / chunk.sample_rate
            record.chunks += 1
            record.arrivals_s.append(arrival)
            record.durations_s.append(seconds)
            record.audio_s += seconds
            if record.ttfa_s is None:
                record.ttfa_s = arrival
    record.total_s = time.perf_counter() - sent


async def measure(
    target: Target, job: Job, *, concurrency: int, index: int, level_start: float, timeout_s: float
) -> RequestRecord:
    """Send one request, follow its stream to the end; failures become the record's ``error``."""
    sent = time.perf_counter()
    record = RequestRecord(path=target.name, concurrency=concurrency, index=index, start_s=sent - level_start)
    try:
        await asyncio.wait_for(_consume(target, job, record, sent), timeout_s)
    except asyncio.TimeoutError:
        record.error = f"no end of stream within {timeout_s:g} s"
    except Exception as exc:  # any failure counts as one error of the run, and the run goes on
        record.error = f"{type(exc).__name__}: {exc}"[:500]
    if record.error:
        record.total_s = None
        logger.warning("%s request %d failed: %s", target.name, index, record.error)
    return record


@dataclass
class Level:
    records: list[RequestRecord]
    wall_s: float


async def run_level(
    target: Target,
    plan: Sequence[Job],
    concurrency: int,
    *,
    requests: int | None,
    duration_s: float | None = None,
    timeout_s: float = 300.0,
) -> Level:
    """``concurrency`` workers send requests back to back (job ``i`` is ``plan[i % len(plan)]``) until
    ``requests`` were sent and/or ``duration_s`` passed; every request sent is followed to its end."""
    if requests is None and duration_s is None:
        raise ValueError("give a request count, a duration or both")
    start = time.perf_counter()
    deadline = start + duration_s if duration_s is not None else None
    numbers = itertools.count()
    records: list[RequestRecord] = []

    async def worker() -> None:
        while deadline is None or time.perf_counter() < deadline:
            index = next(numbers)
            if requests is not None and index >= requests:
                return
            job = plan[index % len(plan)]
            records.append(
                await measure(
                    target, job, concurrency=concurrency, index=index, level_start=start, timeout_s=timeout_s
                )
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Level(records=sorted(records, key=lambda r: r.index), wall_s=time.perf_counter() - start)


# ------------------------------------------------------------------------------------------ a whole run
@dataclass
class LoadConfig:
    concurrencies: list[int]
    triton_url: str | None = None
    gateway_url: str | None = None
    requests: int | None = None  # per level; None: rounds x concurrency (at least 2)
    rounds: int = 1
    duration_s: float | None = None
    warmup: int = 1
    timeout_s: float = 300.0
    texts: tuple[str, ...] = SHORT_TEXTS
    max_new_tokens: int = 40
    seed: int = 0
    model: str = MODEL
    transport: Transport = "ndjson"
    api_key: str | None = field(default=None, repr=False)
    cpu_pids: dict[str, int | None] = field(default_factory=dict)  # name -> pid whose CPU time to record
    metrics_url: str | None = None  # Triton's /metrics: the engine's running batch and step time per level

    def requests_at(self, concurrency: int) -> int | None:
        if self.requests is None and self.duration_s is not None:
            return None
        return requests_per_level(concurrency, self.requests, self.rounds)

    def public(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("api_key")
        values["texts"] = len(self.texts)
        return values


def open_targets(config: LoadConfig) -> list[Target]:
    """Direct Triton first: each level runs direct, then through the gateway, so that both see the
    machine in the same state (the gateway overhead ratios compare them)."""
    targets: list[Target] = []
    if config.triton_url:
        targets.append(TritonTarget(config.triton_url, config.model, config.timeout_s))
    if config.gateway_url:
        kind = GatewayWebSocketTarget if config.transport == "ws" else GatewayNdjsonTarget
        targets.append(kind(config.gateway_url, config.api_key, config.timeout_s))
    if not targets:
        raise ValueError("nothing to load: give a Triton URL, a gateway URL or both")
    return targets


async def _warm_up(target: Target, plan: Sequence[Job], count: int, timeout_s: float) -> None:
    for index in range(count):
        record = await measure(
            target, plan[index % len(plan)], concurrency=1, index=index, level_start=0.0, timeout_s=timeout_s
        )
        if record.error:
            raise LoadError(f"warm-up request to {target.name} failed: {record.error}")


async def _stats(client: Any, model: str) -> Any:
    try:
        return await tritonstats.snapshot(client, model)
    except Exception as exc:  # statistics are a bonus: never fail the run over them
        logger.warning("Triton statistics unavailable: %s", exc)
        return {}


async def _measure_level(
    target: Target, stats_client: Any, config: LoadConfig, plan: Sequence[Job], concurrency: int
) -> dict[str, Any]:
    before = await _stats(stats_client, config.model) if stats_client else {}
    engine_before = await _engine_figures(config) if config.metrics_url else {}
    cpu_before, load_before = cpu.snapshot(config.cpu_pids), os.getloadavg()[0]
    level = await run_level(
        target,
        plan,
        concurrency,
        requests=config.requests_at(concurrency),
        duration_s=config.duration_s,
        timeout_s=config.timeout_s,
    )
    cpu_used = cpu.delta(cpu_before, cpu.snapshot(config.cpu_pids))
    summary = summarize_level(level.records, level.wall_s)
    summary.update(cpu_figures(cpu_used, summary["audio_s"], summary["ok"]))
    summary["load_average"] = [load_before, os.getloadavg()[0]]
    if stats_client:
        summary["triton_stats"] = tritonstats.stats_delta(before, await _stats(stats_client, config.model))
    if config.metrics_url:
        engine_after = await _engine_figures(config, since=engine_before)
        summary["engine_stats"] = enginestats.delta(engine_before, engine_after)
    summary["records"] = [record.to_json() for record in level.records]
    logger.info(
        "%s c=%d: %d/%d ok, TTFA p50 %s s, %s audio-s/s",
        target.name,
        concurrency,
        summary["ok"],
        summary["requests"],
        _fmt(summary["ttfa_s"]["p50"]),
        _fmt(summary["audio_s_per_s"]),
    )
    return summary


async def _engine_figures(config: LoadConfig, since: dict[str, float] | None = None) -> dict[str, float]:
    assert config.metrics_url is not None
    try:
        if since is None:
            return await enginestats.scrape(config.metrics_url, config.model)
        return await enginestats.settled(config.metrics_url, config.model, since)
    except Exception as exc:  # a bonus as well
        logger.warning("engine metrics unavailable: %s", exc)
        return {}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


async def run_load(config: LoadConfig) -> dict[str, Any]:
    """Every concurrency level on every path.

    Returns ``{"config": ..., "paths": {path: {concurrency: summary}}}``.
    """
    plan = jobs(
        config.texts, max(len(config.texts), 1), max_new_tokens=config.max_new_tokens, seed=config.seed
    )
    targets = open_targets(config)
    stats_client = None
    if config.triton_url:
        import tritonclient.grpc.aio as grpcaio

        stats_client = grpcaio.InferenceServerClient(config.triton_url)
    paths: dict[str, dict[int, Any]] = {target.name: {} for target in targets}
    try:
        for target in targets:
            await _warm_up(target, plan, config.warmup, config.timeout_s)
        for concurrency in config.concurrencies:
            for target in targets:
                paths[target.name][concurrency] = await _measure_level(
                    target, stats_client, config, plan, concurrency
                )
    finally:
        for target in targets:
            await target.aclose()
        if stats_client is not None:
            await stats_client.close()
    return {"config": config.public(), "paths": paths}


# ------------------------------------------------------------------------------------------ command
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument("--triton", help="host:port of Triton's gRPC endpoint")
    parser.add_argument("--gateway", help="base URL of the gateway")
    parser.add_argument("--transport", choices=("ndjson", "ws"), default="ndjson")
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "-n", "--requests", type=int, help="requests per level (default: concurrency, at least 2)"
    )
    parser.add_argument("-d", "--duration", type=float, help="seconds per level instead of a count")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--api-key")
    parser.add_argument("-o", "--out", help="write the JSON result here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    args = _parser().parse_args(argv)
    config = LoadConfig(
        concurrencies=args.concurrency,
        triton_url=args.triton,
        gateway_url=args.gateway,
        requests=args.requests,
        duration_s=args.duration,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        timeout_s=args.timeout,
        transport=args.transport,
        api_key=args.api_key,
    )
    result = asyncio.run(run_load(config))
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    for path, levels in result["paths"].items():
        for concurrency, summary in levels.items():
            print(
                f"{path:8s} c={concurrency:<3d} ok={summary['ok']}/{summary['requests']} "
                f"ttfa_p50={_fmt(summary['ttfa_s']['p50'])}s total_p50={_fmt(summary['total_s']['p50'])}s "
                f"rtf_p50={_fmt(summary['rtf']['p50'])} audio_s_per_s={_fmt(summary['audio_s_per_s'])} "
                f"underruns={summary['underruns']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
