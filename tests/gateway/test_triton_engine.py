"""The Triton engine adapter without a Triton server: error mapping, tensors in and out, and real gRPC
connections to a closed port (connection refused) and to a silent socket (deadline)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.backend import SamplingParams, SynthesisRequest, VoicePrompt
from qwen3_tts_gateway.backend.triton import (
    StreamCancelledError,
    TritonEngine,
    build_inputs,
    classify_error,
    is_final,
    parse_chunk,
)
from qwen3_tts_gateway.errors import (
    EngineFailureError,
    EngineInvalidRequestError,
    EngineUnavailableError,
    UpstreamTimeoutError,
)
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import InferenceServerException

from .conftest import make_settings


@pytest.mark.parametrize(
    ("message", "code", "expected"),
    [
        ("unknown speaker 'bob'; valid: serena, vivian", None, EngineInvalidRequestError),
        ("text is longer than 2000 characters", "StatusCode.INVALID_ARGUMENT", EngineInvalidRequestError),
        ("CUDA out of memory, retry later", None, EngineUnavailableError),
        ("out of memory; retry", "StatusCode.UNAVAILABLE", EngineUnavailableError),
        ("Exceeds maximum queue size", None, EngineUnavailableError),
        ("the model's queue is full (256 requests waiting); retry shortly", None, EngineUnavailableError),
        ("the model is shutting down; retry", None, EngineUnavailableError),
        (
            "failed to connect to all addresses; Connection refused",
            grpc.StatusCode.UNAVAILABLE,
            EngineUnavailableError,
        ),
        (
            "Request for unknown model: 'voice_clone' is not found",
            "StatusCode.NOT_FOUND",
            EngineUnavailableError,
        ),
        ("Deadline Exceeded", grpc.StatusCode.DEADLINE_EXCEEDED, UpstreamTimeoutError),
        ("Request timed out", None, UpstreamTimeoutError),
        ("Locally cancelled by application!", grpc.StatusCode.CANCELLED, StreamCancelledError),
        (
            "Failed to process the request(s) for model 'custom_voice_0_0', message: ValueError: boom\n\n"
            "At:\n  model.py(13): execute",
            None,
            EngineFailureError,
        ),
        ("segfault", "StatusCode.INTERNAL", EngineFailureError),
    ],
)
def test_classify_error(message: str, code: object, expected: type) -> None:
    error = classify_error(message, code)
    assert type(error) is expected
    assert "\n" not in error.message and "At:" not in error.message and len(error.message) <= 300


@pytest.mark.parametrize(
    ("message", "meaning"),
    [
        ("the server is out of GPU memory; retry shortly", "out of memory"),
        ("the model's queue is full (256 requests waiting); retry shortly", "overloaded"),
        ("no free slot within 30.0 s: the model's queue is overloaded; retry shortly", "overloaded"),
        ("the model is shutting down; retry", "unavailable"),
    ],
)
def test_the_engine_busy_messages_keep_their_meaning(message: str, meaning: str) -> None:
    assert meaning in classify_error(message).message


def test_invalid_argument_keeps_the_model_message() -> None:
    assert (
        classify_error("unknown speaker 'bob'; valid: serena").message
        == "unknown speaker 'bob'; valid: serena"
    )


def _inputs(request: SynthesisRequest) -> dict[str, tuple[str, list[int]]]:
    return {t.name(): (t.datatype(), list(t.shape())) for t in build_inputs(request)}


def test_build_inputs_custom_voice() -> None:
    request = SynthesisRequest(
        "custom_voice",
        "hi",
        "english",
        speaker="ryan",
        instruct="calm",
        sampling=SamplingParams(seed=7, top_p=0.5),
    )
    assert _inputs(request) == {
        "text": ("BYTES", [1, 1]),
        "language": ("BYTES", [1, 1]),
        "speaker": ("BYTES", [1, 1]),
        "instruct": ("BYTES", [1, 1]),
        "top_p": ("FP32", [1, 1]),
        "seed": ("INT64", [1, 1]),
    }


def test_build_inputs_clone_from_audio_and_from_prompt() -> None:
    audio = np.zeros(72_000, np.float32)
    request = SynthesisRequest(
        "voice_clone", "hi", ref_audio=audio, ref_sample_rate=24_000, ref_text="ref", x_vector_only=False
    )
    assert _inputs(request) == {
        "text": ("BYTES", [1, 1]),
        "language": ("BYTES", [1, 1]),
        "ref_audio": ("FP32", [1, 72_000]),
        "ref_sample_rate": ("INT32", [1, 1]),
        "ref_text": ("BYTES", [1, 1]),
        "x_vector_only": ("BOOL", [1, 1]),
    }
    prompt = VoicePrompt(np.zeros(1024, np.float32), np.zeros((40, 16), np.int64), "ref", False)
    assert _inputs(SynthesisRequest("voice_clone", "hi", voice_prompt=prompt)) == {
        "text": ("BYTES", [1, 1]),
        "language": ("BYTES", [1, 1]),
        "speaker_embedding": ("FP32", [1, 1024]),
        "x_vector_only": ("BOOL", [1, 1]),
        "ref_codes": ("INT64", [1, 40, 16]),
        "ref_text": ("BYTES", [1, 1]),
    }
    x_vector = VoicePrompt(np.zeros(1024, np.float32), np.zeros((0, 16), np.int64), None, True)
    assert set(_inputs(SynthesisRequest("voice_clone", "hi", voice_prompt=x_vector))) == {
        "text", "language", "speaker_embedding", "x_vector_only"
    }  # fmt: skip


def _response(final: bool, **outputs: np.ndarray) -> InferResult:
    response = service_pb2.ModelInferResponse(model_name="custom_voice")
    for name, value in outputs.items():
        tensor = response.outputs.add(name=name, shape=list(value.shape))
        if value.dtype == np.object_:
            tensor.datatype = "BYTES"
            data = b"".join(len(v).to_bytes(4, "little") + v for v in value.reshape(-1))
        else:
            tensor.datatype = {np.float32: "FP32", np.int32: "INT32", np.bool_: "BOOL"}[value.dtype.type]
            data = value.tobytes()
        response.raw_output_contents.append(data)
    response.parameters["triton_final_response"].bool_param = final
    return InferResult(response)


def test_parse_chunk_and_final() -> None:
    result = _response(
        False,
        audio=np.full((1, 1920), 0.25, np.float32),
        sample_rate=np.array([[24_000]], np.int32),
        sequence=np.array([[3]], np.int32),
        is_last=np.array([[True]]),
        finish_reason=np.array([[b"length"]], dtype=np.object_),
    )
    chunk = parse_chunk(result)
    assert (chunk.sample_rate, chunk.sequence, chunk.is_last, chunk.finish_reason) == (
        24_000,
        3,
        True,
        "length",
    )
    assert chunk.audio.shape == (1920,) and chunk.audio[0] == pytest.approx(0.25)
    assert not is_final(result) and is_final(_response(True))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_is_503(tmp_path: Path) -> None:
    engine = TritonEngine(f"127.0.0.1:{_free_port()}", timeout_s=5.0)
    assert not await engine.ready() and not await engine.model_ready("custom_voice")
    with pytest.raises(EngineUnavailableError):
        async for _ in engine.stream(SynthesisRequest("custom_voice", "hi", speaker="ryan")):
            pass
    with pytest.raises(EngineUnavailableError):
        await engine.create_voice_prompt(np.zeros(72_000, np.float32), 24_000, None, True)
    app = create_app(settings=make_settings(tmp_path), engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.post("/synthesize", json={"text": "hi", "speaker": "ryan"})
        assert response.status_code == 503 and response.headers["retry-after"] == "7"
        assert (await client.get("/ready")).status_code == 503
    await engine.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers (a hung Triton)."""
    connections: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_hung_server_is_504(tmp_path: Path, silent_server: int) -> None:
    engine = TritonEngine(f"127.0.0.1:{silent_server}", timeout_s=0.5)
    app = create_app(settings=make_settings(tmp_path, request_timeout_s=0.5), engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.post("/synthesize/stream", json={"text": "hi", "speaker": "ryan"})
    assert response.status_code == 504
    await engine.close()


def test_engine_error_from_exception_object() -> None:
    error = InferenceServerException(msg="unknown language 'xx'; valid: auto, chinese")
    assert type(classify_error(error.message(), error.status())) is EngineInvalidRequestError
