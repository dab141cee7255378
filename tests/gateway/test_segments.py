"""Long text on the non-session endpoints: sentence segments, pipelined, one stream (fake engine).

The fake engine (fakes.py) records when each Triton request started and finished, which is what
pipelining is about; the real models repeat the happy path in tests/e2e/test_long_text_streams.py.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from qwen3_tts_gateway.errors import EngineUnavailableError
from qwen3_tts_gateway.segments import overall_finish_reason, split_segments

from .conftest import clip, make_settings
from .fakes import FakeEngine

SENTENCES = [
    "Dr. Smith paid 3.50 for a coffee.",
    "It was cold!",
    "Was it worth it?",
    "他说：今天很好。",
    "The end.",
]
LONG_TEXT = " ".join(SENTENCES)


@pytest.fixture
async def long_client(
    tmp_path: Path, engine: FakeEngine, client_factory: Callable[..., httpx.AsyncClient]
) -> AsyncIterator[httpx.AsyncClient]:
    async with client_factory(make_settings(tmp_path), engine) as http:
        http._transport.app.state.service.segment_chars = 40  # type: ignore[attr-defined]
        yield http


def test_split_segments_keeps_numbers_abbreviations_and_cjk() -> None:
    assert split_segments("Short text.", 40) == ["Short text."]
    segments = split_segments(LONG_TEXT, 40)
    assert segments[0] == SENTENCES[0]  # no cut after "Dr." nor inside "3.50"
    assert segments[1].endswith("他说：今天很好。")  # sentences packed up to the limit, cut after 。
    assert all(len(segment) <= 40 for segment in segments) and len(segments) >= 3
    assert " ".join(segments) == LONG_TEXT


def test_no_segment_is_only_invisible_characters() -> None:
    # The last sentence fills its segment, then a zero-width space: it was a segment of its own, which the
    # engine refused as blank after the rest of the audio had streamed.
    sentence = "A" * 398 + ". "
    segments = split_segments(sentence * 2 + "\u200b")
    assert segments == [sentence.strip(), sentence.strip()]


def test_overall_finish_reason() -> None:
    assert overall_finish_reason(["stop", "stop"]) == "stop"
    assert overall_finish_reason(["stop", "length", "stop"]) == "length"
    assert overall_finish_reason(["repetition", "length"]) == "repetition"
    assert overall_finish_reason([]) == "stop"


async def test_long_text_streams_segments_in_order_as_one_stream(
    long_client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    body = {"text": LONG_TEXT, "voice": "ryan", "seed": 5}
    response = await long_client.post("/synthesize/stream", json=body)
    assert response.status_code == 200
    *chunks, done = [json.loads(line) for line in response.text.splitlines()]
    segments = split_segments(LONG_TEXT, 40)
    assert [request.text for request in engine.requests] == segments
    assert all(r.speaker == "ryan" and r.sampling.seed == 5 for r in engine.requests)
    assert [c["sequence"] for c in chunks] == list(range(3 * len(segments)))
    assert [c["is_last"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert [c["finish_reason"] for c in chunks[:-1]] == [""] * (len(chunks) - 1)
    assert done["type"] == "done" and done["finish_reason"] == "stop" and done["chunks"] == len(chunks)


async def test_the_next_segment_starts_before_the_previous_one_ends(
    long_client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.delay_s = 0.05
    response = await long_client.post("/synthesize", json={"text": LONG_TEXT, "voice": "ryan"})
    assert response.status_code == 200
    starts = [started for _, started in engine.started]
    assert len(starts) == len(engine.finished_at) > 2
    for index in range(1, len(starts)):
        assert starts[index] < engine.finished_at[index - 1], f"segment {index} waited for the previous one"
    audio, _ = sf.read(io.BytesIO(response.content))
    assert len(audio) == len(starts) * 3 * 4800  # every segment, in full


async def test_a_guard_rail_in_any_segment_is_the_finish_reason(
    long_client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.finish_reason = "length"
    response = await long_client.post("/synthesize", json={"text": LONG_TEXT, "voice": "ryan"})
    assert response.headers["x-finish-reason"] == "length"
    metrics = (await long_client.get("/metrics")).text
    assert 'qwen3_tts_gateway_finish_reasons_total{reason="length",route="/synthesize"} 1.0' in metrics


async def test_a_one_off_clone_encodes_its_reference_once(
    long_client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    body = {"text": LONG_TEXT, "ref_audio": base64.b64encode(clip()).decode(), "ref_text": "A reference."}
    response = await long_client.post("/clone", json=body)
    assert response.status_code == 200, response.text
    assert len(engine.prompt_calls) == 1 and engine.prompt_calls[0][2] == "A reference."
    assert len(engine.requests) == len(split_segments(LONG_TEXT, 40))
    prompt = engine.requests[0].voice_prompt
    assert prompt is not None and all(request.voice_prompt is prompt for request in engine.requests)
    assert all(request.ref_audio is None for request in engine.requests)


async def test_short_text_is_one_request_without_a_prompt(
    long_client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    body = {"text": "Short.", "ref_audio": base64.b64encode(clip()).decode()}
    assert (await long_client.post("/clone", json=body)).status_code == 200
    assert engine.prompt_calls == [] and engine.requests[0].ref_audio is not None


async def test_a_later_segment_failing_is_reported_in_band(
    long_client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.error = EngineUnavailableError("the model server is overloaded; retry later")
    engine.error_at_request = 1
    response = await long_client.post("/synthesize/stream", json={"text": LONG_TEXT, "voice": "ryan"})
    assert response.status_code == 200  # decided by the first segment's first chunk
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["sequence"] for line in lines[:-1]] == [0, 1, 2]
    assert lines[-1]["error"]["status"] == 503
    assert len(engine.requests) == 2  # nothing is sent after the failure


async def test_a_first_segment_failing_decides_the_status(
    long_client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.error = EngineUnavailableError("the model server is overloaded; retry later")
    response = await long_client.post("/synthesize/stream", json={"text": LONG_TEXT, "voice": "ryan"})
    assert response.status_code == 503
    assert len(engine.requests) == 1
