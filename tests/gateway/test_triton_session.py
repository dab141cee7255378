"""``TritonSession`` without a server: which requests go on its gRPC stream, and how responses are routed.

A scripted stand-in for ``tritonclient.grpc.aio.InferenceServerClient.stream_infer`` records the request
dicts the session yields and answers with real ``InferResult`` protobufs. The real session models are
driven through the gateway in tests/e2e/test_agent_sessions.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from qwen3_tts_gateway.backend import SessionRequest, SynthesisRequest, VoicePrompt
from qwen3_tts_gateway.backend.triton import TritonSession
from qwen3_tts_gateway.errors import EngineInvalidRequestError, EngineUnavailableError
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import InferenceServerException

Response = tuple[InferResult | None, InferenceServerException | None]


def _final(request_id: str) -> InferResult:
    response = service_pb2.ModelInferResponse(id=request_id)
    response.parameters["triton_final_response"].bool_param = True
    return InferResult(response)


def _chunk(request_id: str, sequence: int, *, last: bool = False, reason: str = "") -> InferResult:
    response = service_pb2.ModelInferResponse(id=request_id)
    values = {
        "audio": ("FP32", np.full((1, 4), 0.25, np.float32)),
        "sample_rate": ("INT32", np.array([[24_000]], np.int32)),
        "sequence": ("INT32", np.array([[sequence]], np.int32)),
        "is_last": ("BOOL", np.array([[last]], np.bool_)),
        "finish_reason": ("BYTES", np.array([[reason.encode()]], np.object_)),
    }
    for name, (datatype, array) in values.items():
        output = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if datatype == "BYTES":
            raw = b"".join(len(item).to_bytes(4, "little") + item for item in array.reshape(-1))
        else:
            raw = array.tobytes()
        del output
        response.raw_output_contents.append(raw)
    response.parameters["triton_final_response"].bool_param = False
    return InferResult(response)


class ScriptedStream:
    """What ``stream_infer`` returns: reads the session's requests in the background, answers from a queue."""

    def __init__(self, requests: AsyncIterator[dict[str, Any]]) -> None:
        self.sent: list[dict[str, Any]] = []
        self.half_closed = False
        self.cancelled = False
        self.responses: asyncio.Queue[Response | None] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read(requests))

    async def _read(self, requests: AsyncIterator[dict[str, Any]]) -> None:
        async for request in requests:
            self.sent.append(request)
        self.half_closed = True

    def answer(
        self, result: InferResult | None = None, error: InferenceServerException | None = None
    ) -> None:
        self.responses.put_nowait((result, error))

    def end(self) -> None:
        self.responses.put_nowait(None)

    def __aiter__(self) -> ScriptedStream:
        return self

    async def __anext__(self) -> Response:
        item = await self.responses.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def cancel(self) -> bool:
        self.cancelled = True
        self._reader.cancel()
        return True


class ScriptedClient:
    def __init__(self) -> None:
        self.stream: ScriptedStream | None = None

    def stream_infer(
        self, requests: AsyncIterator[dict[str, Any]], stream_timeout: Any = None
    ) -> ScriptedStream:
        assert stream_timeout is None  # a session lives as long as its text keeps coming
        self.stream = ScriptedStream(requests)
        return self.stream


def _text(request: dict[str, Any]) -> str:
    """The ``text`` input: one serialized BYTES element (4-byte little-endian length, then UTF-8)."""
    raw = _inputs(request)["text"]._get_content()
    return raw[4 : 4 + int.from_bytes(raw[:4], "little")].decode()


def _inputs(request: dict[str, Any]) -> dict[str, Any]:
    return {tensor.name(): tensor for tensor in request["inputs"]}


def _control(request: dict[str, Any]) -> tuple[int, bool, bool]:
    """``(session_id, session_start, session_end)`` as sent (an absent flag is false)."""
    tensors = _inputs(request)

    def value(name: str, dtype: Any) -> Any:
        tensor = tensors.get(name)
        return None if tensor is None else np.frombuffer(tensor._get_content(), dtype)[0].item()

    return (
        value("session_id", np.uint64),
        bool(value("session_start", np.bool_)),
        bool(value("session_end", np.bool_)),
    )


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _open(**kwargs: Any) -> tuple[TritonSession, ScriptedStream]:
    client = ScriptedClient()
    synthesis = SynthesisRequest("custom_voice", "", "english", speaker="ryan", **kwargs)
    session = TritonSession(client, SessionRequest(synthesis, lookahead_tokens=3))  # type: ignore[arg-type]
    assert client.stream is not None
    return session, client.stream


async def test_start_then_one_text_request_in_flight_the_rest_joined() -> None:
    session, stream = _open()
    await _settle()
    start = stream.sent[0]
    session_id, opens, closes = _control(start)
    assert (start["model_name"], opens, closes) == ("custom_voice_session", True, False)
    assert 0 < session_id < 2**63 and f"{session_id:016x}" == session.session_id
    assert not {"sequence_id", "sequence_start", "sequence_end"} & set(start)  # no Triton sequence
    assert {"text", "speaker", "language", "lookahead_tokens"} <= set(_inputs(start))
    assert start["parameters"] == {"triton_enable_empty_final_response": True}

    await session.send_text("Hel")
    await session.send_text("lo")  # waits: "Hel" is not acknowledged yet
    await session.send_text(" wor", flush=True)
    await _settle()
    assert len(stream.sent) == 2 and not {"session_start", "flush"} & set(_inputs(stream.sent[1]))
    first = stream.sent[1]
    assert _control(first) == (session_id, False, False)

    audio = session.__aiter__()
    pending = asyncio.ensure_future(anext(audio))
    stream.answer(_final(first["request_id"]))  # the acknowledgement releases the joined rest
    await _settle()
    assert len(stream.sent) == 3 and "flush" in _inputs(stream.sent[2])
    assert (_text(stream.sent[1]), _text(stream.sent[2])) == ("Hel", "lo wor")
    assert not pending.done()

    await session.end("ld.")
    stream.answer(_chunk(start["request_id"], 0))
    assert (await pending).sequence == 0
    pending = asyncio.ensure_future(anext(audio))  # responses are read while the audio is iterated
    stream.answer(_final(stream.sent[2]["request_id"]))
    await _settle()
    assert _control(stream.sent[3]) == (session_id, False, True)
    assert stream.half_closed  # END sent, then the stream half-closed
    assert _text(stream.sent[3]) == "ld."
    with pytest.raises(EngineInvalidRequestError, match="input is closed"):
        await session.send_text("more")

    stream.answer(_chunk(start["request_id"], 1, last=True, reason="stop"))
    stream.answer(_final(start["request_id"]))
    last = await pending
    assert last.is_last and last.finish_reason == "stop"
    with pytest.raises(StopAsyncIteration):
        await anext(audio)
    assert stream.cancelled  # the last acknowledgement was not awaited: the call is ended, not left open


async def test_an_error_before_the_end_ends_the_session() -> None:
    session, stream = _open()
    audio = session.__aiter__()
    stream.answer(error=InferenceServerException("the model server is overloaded, retry"))
    with pytest.raises(EngineUnavailableError):
        await anext(audio)
    assert stream.cancelled
    with pytest.raises(EngineInvalidRequestError, match="ended"):
        await session.send_text("late")


async def test_an_error_after_the_last_chunk_is_text_that_raced_the_end() -> None:
    session, stream = _open()
    audio = session.__aiter__()
    start_id = f"{session.session_id}-0"
    stream.answer(_chunk(start_id, 0, last=True, reason="length"))
    stream.answer(error=InferenceServerException("no open session 7: it finished"))
    stream.answer(_final(start_id))
    assert (await anext(audio)).finish_reason == "length"
    with pytest.raises(StopAsyncIteration):
        await anext(audio)


async def test_text_refused_because_the_session_just_ended_waits_for_its_last_chunk() -> None:
    """The engine idled the session out while its text was on the way: the text's refusal can come before
    the last chunk. The session ends with its own reason, not with that refusal."""
    session, stream = _open()
    audio = session.__aiter__()
    start_id = f"{session.session_id}-0"
    await session.send_text("late words")
    stream.answer(
        error=InferenceServerException("no open session 7: it finished, timed out or never started")
    )
    stream.answer(_chunk(start_id, 0, last=True, reason="idle_timeout"))
    stream.answer(_final(start_id))
    assert (await anext(audio)).finish_reason == "idle_timeout"
    with pytest.raises(StopAsyncIteration):
        await anext(audio)


async def test_closing_early_cancels_the_call() -> None:
    session, stream = _open(
        voice_prompt=VoicePrompt(np.zeros(8, np.float32), np.zeros((0, 16), np.int64), None, True)
    )
    await session.aclose()
    assert stream.cancelled
    with pytest.raises(EngineInvalidRequestError):
        await session.end()
