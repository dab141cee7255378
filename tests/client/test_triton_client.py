"""TritonTTSClient without a server: tensors per the contract, response parsing from real protobuf
messages, error mapping, and a refused connection on a real socket. The real server is in
tests/e2e/test_python_client.py.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from qwen3_tts_client import (
    APIConnectionError,
    BadGatewayError,
    GatewayTimeoutError,
    InternalServerError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from qwen3_tts_client.retry import RetryPolicy
from qwen3_tts_client.triton import (
    TritonTTSClient,
    build_inputs,
    has_outputs,
    is_final,
    parse_result,
    triton_error,
)
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from .servers import free_port


def by_name(inputs: list) -> dict:
    return {i.name(): i for i in inputs}


def test_inputs_follow_the_contract() -> None:
    inputs = by_name(
        build_inputs(
            {
                "text": "你好",
                "speaker": "Vivian",
                "language": "auto",
                "instruct": None,  # omitted
                "temperature": 0.7,
                "top_k": 50,
                "seed": 2**40,
                "do_sample": True,
            }
        )
    )
    assert set(inputs) == {"text", "speaker", "language", "temperature", "top_k", "seed", "do_sample"}
    assert (inputs["text"].datatype(), inputs["text"].shape()) == ("BYTES", [1, 1])
    assert (inputs["temperature"].datatype(), inputs["temperature"].shape()) == ("FP32", [1, 1])
    assert inputs["top_k"].datatype() == "INT32"
    assert inputs["seed"].datatype() == "INT64"
    assert inputs["do_sample"].datatype() == "BOOL"


def test_reference_tensors() -> None:
    inputs = by_name(
        build_inputs(
            {
                "ref_audio": np.zeros(48000, np.float64),
                "ref_sample_rate": 16000,
                "speaker_embedding": np.ones(8, np.float32),
                "ref_codes": np.zeros((5, 16), np.int64),
            }
        )
    )
    assert (inputs["ref_audio"].datatype(), inputs["ref_audio"].shape()) == ("FP32", [1, 48000])
    assert (inputs["ref_sample_rate"].datatype(), inputs["ref_sample_rate"].shape()) == ("INT32", [1, 1])
    assert inputs["speaker_embedding"].shape() == [1, 8]
    assert (inputs["ref_codes"].datatype(), inputs["ref_codes"].shape()) == ("INT64", [1, 5, 16])


def test_unknown_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no input 'speed'"):
        build_inputs({"speed": 1.0})


def response(
    audio: np.ndarray | None,
    *,
    sequence: int = 0,
    is_last: bool = False,
    reason: str = "",
    final: bool = False,
) -> InferResult:
    message = service_pb2.ModelInferResponse(model_name="custom_voice")
    if audio is not None:
        tensors = [
            ("audio", "FP32", audio.astype(np.float32).reshape(1, -1)),
            ("sample_rate", "INT32", np.array([[24000]], np.int32)),
            ("sequence", "INT32", np.array([[sequence]], np.int32)),
            ("is_last", "BOOL", np.array([[is_last]], np.bool_)),
            ("finish_reason", "BYTES", np.array([[reason.encode()]], np.object_)),
        ]
        for name, datatype, value in tensors:
            output = message.outputs.add(name=name, datatype=datatype)
            output.shape.extend(value.shape)
            raw = serialize_byte_tensor(value).item() if datatype == "BYTES" else value.tobytes()
            message.raw_output_contents.append(raw)
    message.parameters["triton_final_response"].bool_param = final
    return InferResult(message)


def test_parse_a_chunk() -> None:
    result = response(np.linspace(-1, 1, 960), sequence=3, is_last=True, reason="stop")
    chunk = parse_result(result)
    assert (chunk.sequence, chunk.sample_rate, chunk.is_last, chunk.finish_reason) == (3, 24000, True, "stop")
    assert chunk.audio.dtype == np.float32 and len(chunk.audio) == 960
    assert len(chunk.pcm16()) == 2 * 960
    assert not is_final(result) and has_outputs(result)


def test_the_empty_final_response() -> None:
    final = response(None, final=True)
    assert is_final(final) and not has_outputs(final)


def test_empty_finish_reason_is_none() -> None:
    assert parse_result(response(np.zeros(4))).finish_reason is None


@pytest.mark.parametrize(
    ("message", "status", "expected", "code"),
    [
        ("unknown speaker 'bob'; valid: ryan", "StatusCode.INVALID_ARGUMENT", UnprocessableEntityError, 422),
        ("unknown speaker 'bob'; valid: vivian", None, UnprocessableEntityError, 422),  # in a stream: no code
        ("CUDA out of memory; retry later", None, ServiceUnavailableError, 503),
        ("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED", GatewayTimeoutError, 504),
        # A model not loaded there, as the gateway reads it: 503, retry later (the names are the contract's).
        ("Request for unknown model: 'x' is not found", "StatusCode.NOT_FOUND", ServiceUnavailableError, 503),
        ("boom", "StatusCode.INTERNAL", BadGatewayError, 502),  # the model failed: the gateway's 502
        ("request cancelled", "StatusCode.CANCELLED", InternalServerError, 500),
        ("failed to connect to all addresses", "StatusCode.UNAVAILABLE", APIConnectionError, None),
    ],
)  # fmt: skip
def test_triton_error_mapping(message: str, status: str | None, expected: type, code: int | None) -> None:
    error = triton_error(InferenceServerException(message, status=status))
    assert isinstance(error, expected)
    assert error.status_code == code
    assert message in error.message


def test_refused_connection_is_an_api_connection_error() -> None:
    with TritonTTSClient(f"127.0.0.1:{free_port()}", timeout_s=10) as client:
        assert client.is_ready() is False
        with pytest.raises(APIConnectionError):
            list(client.stream("hello", speaker="vivian"))


def test_connection_errors_are_retried_as_the_policy_says(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listening: each call is tried 1 + max_retries times with the policy's backoff, and the error
    names the call and its last attempt (as the gateway client's do)."""
    policy = RetryPolicy(max_retries=2, backoff_base=0.01, jitter=0)
    with TritonTTSClient(f"127.0.0.1:{free_port()}", timeout_s=10, retry_policy=policy) as client:
        with caplog.at_level(logging.INFO, logger="qwen3_tts_client.retry"):
            with pytest.raises(APIConnectionError) as info:
                list(client.stream("hello", speaker="vivian"))
            retries = [re.search(r"retry \d/\d", r.getMessage()) for r in caplog.records]
            assert [match.group(0) for match in retries if match] == ["retry 1/2", "retry 2/2"]
            assert info.value.request is not None
            assert (info.value.request.operation, info.value.request.attempt) == ("custom_voice", 2)
            caplog.clear()
            with pytest.raises(APIConnectionError) as info:
                client.voice_prompt((np.zeros(48_000, np.float32), 16_000))
            assert len(caplog.records) == 2 and info.value.request.operation == "voice_prompt"  # type: ignore[union-attr]
    with TritonTTSClient(f"127.0.0.1:{free_port()}", timeout_s=10, max_retries=0) as client:
        caplog.clear()
        with (
            caplog.at_level(logging.INFO, logger="qwen3_tts_client.retry"),
            pytest.raises(APIConnectionError),
        ):
            list(client.stream("hello", speaker="vivian"))
        assert not caplog.records
    with pytest.raises(ValueError, match="not both"):
        TritonTTSClient("127.0.0.1:1", retry_policy=policy, max_retries=1)


def test_clone_needs_a_reference() -> None:
    with TritonTTSClient(f"127.0.0.1:{free_port()}") as client, pytest.raises(ValueError):
        client.stream_clone("hello")
