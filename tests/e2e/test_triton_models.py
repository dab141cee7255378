"""The Triton models end to end: a real tritonserver on 127.0.0.1, real gRPC / HTTP, tiny checkpoints."""

from __future__ import annotations

import json
import queue
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from benchmarks.enginestats import parse as parse_engine_metrics
from qwen3_tts_serving import contract
from qwen3_tts_serving.engine.config import EngineConfig
from qwen3_tts_serving.engine.engine import FAULT_MARKER
from qwen3_tts_serving.engine.loading import load_model
from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.launcher import perf_analyzer_binary, perf_analyzer_env

pytestmark = pytest.mark.e2e

AUDIO_ATOL = 1e-4


def _input(name: str, value: Any) -> grpcclient.InferInput:
    """One input as the contract types it."""
    ((_, datatype, array),) = contract.request_arrays({name: value})
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


@dataclass
class StreamResult:
    chunks: list[dict[str, Any]] = field(default_factory=list)
    final: bool = False
    times: list[float] = field(default_factory=list)

    def audio(self) -> np.ndarray:
        return np.concatenate([c["audio"] for c in self.chunks]) if self.chunks else np.zeros(0, np.float32)


class StreamingCalls:
    """Several requests on one gRPC stream (so Triton can batch them), results collected per request id."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.events: queue.Queue = queue.Queue()
        self.results: dict[str, StreamResult] = {}
        # tritonclient passes stream errors without the request id, so they are kept in arrival order
        self.errors: list[str] = []
        self.client.start_stream(
            callback=lambda result, error: self.events.put((result, error, time.monotonic()))
        )

    def send(self, model: str, request_id: str, **inputs: Any) -> None:
        self.send_all(model, {request_id: inputs})

    def send_all(self, model: str, requests: dict[str, dict[str, Any]]) -> None:
        """Tensors are built first so the requests leave back to back and meet in one Triton batch."""
        prepared = {rid: [_input(n, v) for n, v in inputs.items()] for rid, inputs in requests.items()}
        for request_id, tensors in prepared.items():
            self.results[request_id] = StreamResult()
            self.client.async_stream_infer(
                model, tensors, request_id=request_id, enable_empty_final_response=True
            )

    def wait(self, timeout: float = 180) -> dict[str, StreamResult]:
        deadline = time.monotonic() + timeout
        while sum(r.final for r in self.results.values()) + len(self.errors) < len(self.results):
            result, error, at = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            self._record(result, error, at)
        return self.results

    def _record(self, result: Any, error: Any, at: float) -> None:
        if error is not None:
            self.errors.append(str(error))
            return
        response = result.get_response()
        target = self.results[response.id]
        if response.outputs:
            target.chunks.append(
                {
                    "audio": result.as_numpy("audio")[0],
                    "sequence": int(result.as_numpy("sequence")[0, 0]),
                    "sample_rate": int(result.as_numpy("sample_rate")[0, 0]),
                    "is_last": bool(result.as_numpy("is_last")[0, 0]),
                    "finish_reason": result.as_numpy("finish_reason")[0, 0].decode(),
                }
            )
            target.times.append(at)
        if response.parameters["triton_final_response"].bool_param:
            target.final = True

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


@pytest.fixture
def calls(triton_server):
    streaming = StreamingCalls(triton_server.grpc_url)
    yield streaming
    streaming.close()


@pytest.fixture(scope="module")
def package_model(tiny_checkpoints: Path):
    """The package's own model in the test process, for non-streaming reference output."""

    def load(capability: Capability, flavour: str):
        return load_model(EngineConfig(checkpoint_dir=tiny_checkpoints / flavour, device="cpu"), capability)

    return load


def _clip(seconds: float = 3.5) -> np.ndarray:
    t = np.arange(int(seconds * 24000)) / 24000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 1.5 * t)).astype(np.float32)


def test_custom_voice_streams_the_package_output(calls, package_model):
    text = "Hello from Triton, in chunks."
    calls.send("custom_voice", "a", text=text, speaker="ryan", language="english", do_sample=False)
    result = calls.wait()["a"]
    assert not calls.errors
    chunks = result.chunks
    assert len(chunks) > 1
    assert [c["sequence"] for c in chunks] == list(range(len(chunks)))
    assert [c["is_last"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert {c["sample_rate"] for c in chunks} == {24000}
    assert chunks[-1]["finish_reason"] in ("stop", "length", "repetition")
    wavs, _ = package_model(Capability.CUSTOM_VOICE, "custom_voice").generate_custom_voice(
        text=text, speaker="ryan", language="english", do_sample=False, subtalker_dosample=False
    )
    np.testing.assert_allclose(result.audio(), wavs[0], atol=AUDIO_ATOL)


def test_a_bad_request_fails_alone_and_the_batch_runs_together(calls, triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    before = client.get_inference_statistics("custom_voice").model_stats[0]
    calls.send_all(
        "custom_voice",
        {
            # The same set of inputs everywhere: Triton only batches requests whose inputs match.
            "good-1": {"text": "First good one.", "speaker": "ryan", "language": "auto", "do_sample": False},
            "bad": {"text": "Who am I?", "speaker": "nobody", "language": "auto", "do_sample": False},
            "good-2": {"text": "Second one.", "speaker": "vivian", "language": "auto", "do_sample": False},
            "bad-2": {"text": "Third.", "speaker": "serena", "language": "klingon", "do_sample": False},
        },
    )
    results = calls.wait()
    errors = sorted(calls.errors)
    assert len(errors) == 2
    assert "unknown language 'klingon'" in errors[0] and "english" in errors[0]
    assert "unknown speaker 'nobody'" in errors[1] and "ryan" in errors[1]
    for name in ("good-1", "good-2"):
        assert results[name].chunks[-1]["is_last"]
    after = client.get_inference_statistics("custom_voice").model_stats[0]
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert executions < inferences, (inferences, executions)


def test_a_poisoned_row_fails_alone_and_its_batch_mates_speak_the_package_output(calls, package_model):
    texts = {"good-1": "First healthy stream.", "good-2": "Second healthy stream, a bit longer."}
    same_inputs = {"speaker": "ryan", "language": "english", "do_sample": False}
    calls.send_all(
        "custom_voice",
        {
            "good-1": {"text": texts["good-1"], **same_inputs},
            "poisoned": {"text": f"{FAULT_MARKER} This one goes bad.", **same_inputs},
            "good-2": {"text": texts["good-2"], **same_inputs},
        },
    )
    results = calls.wait()
    assert len(calls.errors) == 1 and "non-finite" in calls.errors[0], calls.errors
    assert not any(chunk["is_last"] for chunk in results["poisoned"].chunks)
    tts = package_model(Capability.CUSTOM_VOICE, "custom_voice")
    for name, text in texts.items():
        assert results[name].chunks[-1]["is_last"]
        wavs, _ = tts.generate_custom_voice(
            text=text, speaker="ryan", language="english", do_sample=False, subtalker_dosample=False
        )
        np.testing.assert_allclose(results[name].audio(), wavs[0], atol=AUDIO_ATOL)


def test_sampling_values_out_of_range_are_refused_naming_the_range(calls):
    calls.send("custom_voice", "hot", text="Hello there.", speaker="ryan", temperature=1e39)
    calls.wait()
    calls.send("custom_voice", "penalty", text="Hello there.", speaker="ryan", repetition_penalty=3e38)
    calls.wait()
    assert len(calls.errors) == 2
    assert "temperature must be a number between 1e-05 and 10" in calls.errors[0]
    assert "repetition_penalty must be a number between 0.1 and 10" in calls.errors[1]


def test_a_newcomer_hears_audio_before_a_long_request_ends(calls):
    calls.send("custom_voice", "long", text="This one is long. " * 4, speaker="ryan", do_sample=False)
    while not calls.results["long"].chunks:
        calls._record(*calls.events.get(timeout=120))
    calls.send("custom_voice", "late", text="Hi.", speaker="aiden", do_sample=False)
    results = calls.wait()
    long, late = results["long"], results["late"]
    assert late.times[0] < long.times[-1], "the newcomer waited for the long stream to finish"
    assert len(long.chunks) > 3


def test_errors_name_the_choices_for_every_model(calls):
    calls.send("voice_design", "no-description", text="Hello.", instruct="  ")
    calls.wait()
    calls.send("voice_clone", "short-clip", text="Hi.", ref_audio=_clip(1.0), ref_sample_rate=24000)
    calls.wait()
    calls.send("custom_voice", "empty", text="", speaker="ryan")
    calls.wait()
    calls.send("custom_voice", "bad-top-p", text="x", speaker="ryan", top_p=2.0)
    calls.wait()
    expected = ["instruct (the voice description) is required", "at least 3 s", "text is empty", "top_p"]
    assert len(calls.errors) == len(expected)
    for message, fragment in zip(calls.errors, expected, strict=True):
        assert fragment in message


def test_voice_prompt_reused_by_voice_clone_equals_cloning_from_the_clip(calls, triton_server, package_model):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    clip, ref_text = _clip(), "A reference transcript."
    prompt = client.infer(
        "voice_prompt",
        [_input("ref_audio", clip), _input("ref_sample_rate", 24000), _input("ref_text", ref_text)],
    )
    embedding = prompt.as_numpy("speaker_embedding")[0]
    codes = prompt.as_numpy("ref_codes")[0]
    assert codes.shape[1] == 16 and codes.shape[0] > 30  # 3.5 s at 12.5 frames per second
    text = "Speak with the stored voice."
    calls.send(
        "voice_clone",
        "from-clip",
        text=text,
        ref_audio=clip,
        ref_sample_rate=24000,
        ref_text=ref_text,
        do_sample=False,
    )
    calls.send(
        "voice_clone",
        "from-prompt",
        text=text,
        speaker_embedding=embedding,
        ref_codes=codes,
        ref_text=ref_text,
        do_sample=False,
    )
    results = calls.wait()
    from_clip, from_prompt = results["from-clip"].audio(), results["from-prompt"].audio()
    assert from_clip.size > 0
    np.testing.assert_allclose(from_prompt, from_clip, atol=AUDIO_ATOL)
    wavs, _ = package_model(Capability.VOICE_CLONE, "base").generate_voice_clone(
        text=text,
        language="auto",
        ref_audio=(clip, 24000),
        ref_text=ref_text,
        do_sample=False,
        subtalker_dosample=False,
    )
    # The package decodes reference + generated codes in one pass; the server's chunks see at most
    # decoder_left_context_frames of context, so the match is close rather than exact here.
    assert from_clip.shape == wavs[0].shape
    error = np.sqrt(np.mean((from_clip - wavs[0]) ** 2)) / np.sqrt(np.mean(wavs[0] ** 2))
    assert error < 0.01, error


def test_voice_design_streams(calls):
    calls.send("voice_design", "d", text="Designed.", instruct="a bright young voice", seed=np.int64(3))
    result = calls.wait()["d"]
    assert not calls.errors and result.audio().size > 0


def test_http_generate_stream_and_one_shot_generate(triton_server):
    base = f"{triton_server.http_url}/v2/models/custom_voice"
    body = {"text": "Over HTTP.", "speaker": "ryan", "do_sample": False}
    events = []
    with httpx.stream("POST", f"{base}/generate_stream", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert [e["sequence"] for e in events] == list(range(len(events)))
    assert events[-1]["is_last"] and events[-1]["finish_reason"] == "stop"
    streamed = np.concatenate([np.asarray(e["audio"], dtype=np.float32) for e in events])

    whole = httpx.post(f"{base}/generate", json={**body, "stream": False}, timeout=120).json()
    assert whole["is_last"] and whole["sequence"] == 0
    np.testing.assert_allclose(np.asarray(whole["audio"], dtype=np.float32), streamed, atol=AUDIO_ATOL)

    bad = httpx.post(f"{base}/generate", json={"text": "x", "speaker": "zed"}, timeout=60)
    assert bad.status_code == 400 and "valid:" in bad.json()["error"]


def test_a_cancelled_stream_leaves_the_server_serving(triton_server):
    streaming = StreamingCalls(triton_server.grpc_url)
    streaming.send(
        "custom_voice", "to-cancel", text="This one is long. " * 4, speaker="ryan", do_sample=False
    )
    streaming._record(*streaming.events.get(timeout=120))
    streaming.client.stop_stream(cancel_requests=True)
    streaming.client.close()
    fresh = StreamingCalls(triton_server.grpc_url)
    fresh.send("custom_voice", "after", text="Still here.", speaker="ryan", do_sample=False)
    assert fresh.wait()["after"].chunks[-1]["is_last"]
    fresh.close()


def test_perf_analyzer_streams_against_custom_voice(triton_server, tmp_path):
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"data": [{"text": ["Hi."], "speaker": ["ryan"]}]}))
    command = [
        str(perf_analyzer_binary()),
        "-m",
        "custom_voice",
        "-u",
        triton_server.grpc_url,
        "-i",
        "grpc",
        "--streaming",
        "--input-data",
        str(data),
        "--concurrency-range",
        "1:2",
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        "2",
        "--max-trials",
        "3",
        "--stability-percentage",
        "1000",
    ]
    run = subprocess.run(command, env=perf_analyzer_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Concurrency: 1" in run.stdout and "Concurrency: 2" in run.stdout
    assert "throughput" in run.stdout.lower()


def _session_inputs(
    text: str, session_id: int, *, start: bool = False, end: bool = False, **extra: Any
) -> list[grpcclient.InferInput]:
    """A request of session ``session_id``: ``start`` opens it (voice and sampling in ``extra``), ``end``
    closes its input."""
    controls = {"session_id": np.uint64(session_id), "session_start": start, "session_end": end}
    fields = {**controls, "text": text, **extra}
    return [_input(name, value) for name, value in fields.items()]


def test_a_session_speaks_before_its_text_is_complete_and_matches_the_whole_text(triton_server):
    words = "Agents speak while they think, one word after another.".split(" ")
    fragments = [words[0]] + [" " + w for w in words[1:]]
    streaming = StreamingCalls(triton_server.grpc_url)
    streaming.results["session"] = StreamResult()
    start = _session_inputs("", 4242, start=True, speaker="ryan", do_sample=False)
    streaming.client.async_stream_infer(
        "custom_voice_session", start, request_id="session", enable_empty_final_response=True
    )
    audio_before_end = False
    for index, fragment in enumerate(fragments):
        last = index == len(fragments) - 1
        audio_before_end |= bool(streaming.results["session"].chunks)
        streaming.results[f"text-{index}"] = StreamResult()
        streaming.client.async_stream_infer(
            "custom_voice_session",
            _session_inputs(fragment, 4242, end=last),
            request_id=f"text-{index}",
            enable_empty_final_response=True,
        )
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:  # an agent producing a word now and then
            try:
                streaming._record(*streaming.events.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                break
    streamed = streaming.wait()["session"]
    streaming.close()
    assert not streaming.errors
    assert audio_before_end, "no audio before the last fragment was sent"
    assert streamed.chunks[-1]["is_last"]

    whole = StreamingCalls(triton_server.grpc_url)
    whole.results["whole"] = StreamResult()
    whole.client.async_stream_infer(
        "custom_voice_session",
        _session_inputs(" ".join(words), 4343, start=True, end=True, speaker="ryan", do_sample=False),
        request_id="whole",
        enable_empty_final_response=True,
    )
    at_once = whole.wait()["whole"]
    whole.close()
    np.testing.assert_allclose(streamed.audio(), at_once.audio(), atol=AUDIO_ATOL)


def test_text_for_an_unknown_session_is_refused(calls):
    calls.results["orphan"] = StreamResult()
    calls.client.async_stream_infer(
        "custom_voice_session",
        _session_inputs("hello", 999),
        request_id="orphan",
        enable_empty_final_response=True,
    )
    calls.wait()
    # The front refuses it and says how to open a session (Triton's sequence batcher refused such a request
    # before any model, without the FINAL flag).
    assert calls.errors == [
        "no open session 999: it finished, timed out or never started "
        "(a session's first request carries session_start)"
    ]


def test_a_model_with_a_setting_it_cannot_run_fails_to_load_with_a_short_reason(serving_settings, tmp_path):
    from qwen3_tts_serving.launcher import TritonServer, build_model_repository
    from qwen3_tts_serving.launcher.process import StartupError

    settings = serving_settings.model_copy(update={"device": "cpu", "code_predictor": "cuda_graphs"})
    repository = build_model_repository(settings, tmp_path / "repo", ["custom_voice"])
    with pytest.raises(StartupError) as info:
        with TritonServer(repository, settings, log_path=tmp_path / "tritonserver.log"):
            pass
    message = str(info.value)
    assert (
        "custom_voice_engine_0: code_predictor=cuda_graphs needs a CUDA device; on a CPU: static or reference"
        in message
    )


def _engine_metrics(url: str, model: str) -> dict[str, float]:
    return parse_engine_metrics(httpx.get(url, timeout=10).text, model)


def test_the_engine_reports_its_figures_on_tritons_metrics_endpoint(calls, triton_server):
    before = _engine_metrics(triton_server.metrics_url, "voice_design")
    calls.send_all(
        "voice_design",
        {f"m{i}": {"text": "Counted.", "instruct": "a calm voice", "seed": np.int64(i)} for i in range(2)},
    )
    results = calls.wait()
    assert not calls.errors and all(r.final for r in results.values())
    reasons = [r.chunks[-1]["finish_reason"] for r in results.values()]
    deadline = time.monotonic() + 10  # published when the engine goes idle
    while True:
        after = _engine_metrics(triton_server.metrics_url, "voice_design")
        counted = after.get("qwen3_tts_first_audio_seconds_count", 0) - before.get(
            "qwen3_tts_first_audio_seconds_count", 0
        )
        if counted >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counted == 2
    frames = sum(len(r.audio()) for r in results.values()) // 1920
    assert after["qwen3_tts_frames_total"] - before.get("qwen3_tts_frames_total", 0) == frames
    assert after["qwen3_tts_steps_total"] > before.get("qwen3_tts_steps_total", 0)
    assert after["qwen3_tts_step_seconds_total"] > before.get("qwen3_tts_step_seconds_total", 0)
    for reason in set(reasons):
        key = f'qwen3_tts_finished_total{{reason="{reason}"}}'
        assert after[key] - before.get(key, 0) == reasons.count(reason)
    assert after["qwen3_tts_active_streams"] == 0 and after["qwen3_tts_queued_streams"] == 0


# ------------------------------------------------------------------ one engine per checkpoint per GPU
def _open_session(calls: StreamingCalls, model: str, session_id: int, text: str, **extra: Any) -> None:
    """START a session (its request id is ``s<session_id>``) and leave its input open."""
    calls.results[f"s{session_id}"] = StreamResult()
    calls.client.async_stream_infer(
        model,
        _session_inputs(text, session_id, start=True, **extra),
        request_id=f"s{session_id}",
        enable_empty_final_response=True,
    )


def _end_session(calls: StreamingCalls, model: str, session_id: int) -> None:
    calls.results[f"end{session_id}"] = StreamResult()
    calls.client.async_stream_infer(
        model,
        _session_inputs("", session_id, end=True),
        request_id=f"end{session_id}",
        enable_empty_final_response=True,
    )


def _settled_metrics(url: str, model: str, before: dict[str, float], name: str) -> dict[str, float]:
    """The engine's figures once ``name`` moved past ``before`` (published twice a second and at idle)."""
    deadline = time.monotonic() + 10
    while True:
        after = _engine_metrics(url, model)
        if after.get(name, 0) > before.get(name, 0) or time.monotonic() > deadline:
            return after
        time.sleep(0.1)


def test_a_plain_request_and_a_session_step_in_the_same_frame(calls, triton_server):
    """custom_voice and custom_voice_session forward to one engine (custom_voice_engine_0): a plain stream
    and a voice-agent session running at once share its batch, which its statistics count."""
    engine = "custom_voice_engine_0"
    mixed = "qwen3_tts_mixed_steps_total"
    before = _engine_metrics(triton_server.metrics_url, engine)
    long_text = "A sentence long enough to keep speaking for a while. " * 2
    _open_session(calls, "custom_voice_session", 5151, long_text, speaker="ryan", do_sample=False)
    calls.send("custom_voice", "plain", text=long_text, speaker="aiden", do_sample=False, max_new_tokens=40)
    _end_session(calls, "custom_voice_session", 5151)
    results = calls.wait()
    assert not calls.errors, calls.errors
    assert results["plain"].chunks[-1]["is_last"] and results["s5151"].chunks[-1]["is_last"]
    after = _settled_metrics(triton_server.metrics_url, engine, before, mixed)
    assert after.get(mixed, 0) > before.get(mixed, 0), (
        "the session and the plain stream never stepped together"
    )
    assert after["qwen3_tts_steps_total"] > after[mixed]  # the count is of mixed steps only


@pytest.fixture(scope="module")
def two_engine_server(serving_settings, tmp_path_factory):
    """A second server whose CustomVoice checkpoint has two engine models (as a host with two GPUs has)."""
    from qwen3_tts_serving.launcher import TritonServer, build_model_repository

    settings = serving_settings.model_copy(update={"engines_per_checkpoint": 2, "device": "cpu"})
    folder = tmp_path_factory.mktemp("two-engines")
    repository = build_model_repository(
        settings, folder / "repo", ["custom_voice", "custom_voice_session", "voice_prompt"]
    )
    with TritonServer(repository, settings, log_path=folder / "tritonserver.log") as server:
        yield server


def _boards(server: Any, checkpoint: str) -> list[int | None]:
    from qwen3_tts_serving.load_board import LoadBoard, board_path

    return [
        LoadBoard(board_path(server.model_repository / f"{checkpoint}_engine_{index}")).load()
        for index in (0, 1)
    ]


def test_new_streams_go_to_the_least_loaded_engine(two_engine_server, package_model):
    """Two sessions left open land on different engines (each holds one), a plain request then goes to the
    least loaded and speaks the package's output, and the engines' counts return to zero."""
    server = two_engine_server
    calls = StreamingCalls(server.grpc_url)
    try:
        assert _boards(server, "custom_voice") == [0, 0]
        _open_session(calls, "custom_voice_session", 11, "First.", speaker="ryan", do_sample=False)
        _open_session(calls, "custom_voice_session", 12, "Second.", speaker="ryan", do_sample=False)
        deadline = time.monotonic() + 60
        while _boards(server, "custom_voice") != [1, 1]:
            assert time.monotonic() < deadline, (_boards(server, "custom_voice"), calls.errors)
            try:
                calls._record(*calls.events.get(timeout=0.05))
            except queue.Empty:
                pass

        text = "Placed on the engine with room."
        calls.send("custom_voice", "plain", text=text, speaker="ryan", language="english", do_sample=False)
        for session_id in (11, 12):
            _end_session(calls, "custom_voice_session", session_id)
        results = calls.wait()
        assert not calls.errors, calls.errors
        wavs, _ = package_model(Capability.CUSTOM_VOICE, "custom_voice").generate_custom_voice(
            text=text, speaker="ryan", language="english", do_sample=False, subtalker_dosample=False
        )
        np.testing.assert_allclose(results["plain"].audio(), wavs[0], atol=AUDIO_ATOL)
        assert all(results[f"s{i}"].chunks[-1]["is_last"] for i in (11, 12))
        for index in (0, 1):  # each session spoke on its own engine
            figures = _settled_metrics(
                server.metrics_url, f"custom_voice_engine_{index}", {}, "qwen3_tts_steps_total"
            )
            assert figures.get("qwen3_tts_steps_total", 0) > 0, f"engine {index} did no work"
        deadline = time.monotonic() + 10
        while _boards(server, "custom_voice") != [0, 0]:
            assert time.monotonic() < deadline, _boards(server, "custom_voice")
            time.sleep(0.05)
    finally:
        calls.close()


def test_voice_prompts_and_clones_share_one_base_engine_per_gpu(two_engine_server):
    """voice_prompt forwards to a Base engine model; the server holds the Base weights once per engine,
    not once per client-facing model."""
    server = two_engine_server
    models = httpx.post(f"{server.http_url}/v2/repository/index", json={}, timeout=10).json()
    ready = sorted(m["name"] for m in models if m.get("state") == "READY")
    assert ready == [
        "base_engine_0", "base_engine_1", "custom_voice", "custom_voice_engine_0", "custom_voice_engine_1",
        "custom_voice_session", "voice_prompt",
    ]  # fmt: skip
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        inputs = [
            _input("ref_audio", _clip()),
            _input("ref_sample_rate", 24000),
            _input("x_vector_only", True),
        ]
        result = client.infer("voice_prompt", inputs)
        assert result.as_numpy("speaker_embedding").shape[-1] > 0
        bad = [_input("ref_audio", _clip(0.2)), _input("ref_sample_rate", 24000)]
        with pytest.raises(Exception, match="ref_audio") as info:
            client.infer("voice_prompt", bad)
        assert "StatusCode.INVALID_ARGUMENT" in str(info.value) or "INVALID" in str(info.value).upper()
    finally:
        client.close()


def _perf_data(model: str) -> dict[str, Any]:
    """One perf_analyzer input entry per capability (a list per input; shaped where the length varies)."""
    clip = [round(float(x), 5) for x in _clip(3.0)]
    entries: dict[str, dict[str, Any]] = {
        "custom_voice": {"text": ["Hi."], "speaker": ["ryan"]},
        "voice_design": {"text": ["Hi."], "instruct": ["a calm, low voice"]},
        "voice_clone": {
            "text": ["Hi."],
            "ref_audio": {"content": clip, "shape": [len(clip)]},
            "ref_sample_rate": [24000],
            "x_vector_only": [True],
        },
        "voice_prompt": {
            "ref_audio": {"content": clip, "shape": [len(clip)]},
            "ref_sample_rate": [24000],
            "x_vector_only": [True],
        },
    }
    return {"data": [entries[model]]}


@pytest.mark.parametrize("model", ["custom_voice", "voice_design", "voice_clone", "voice_prompt"])
def test_perf_analyzer_drives_every_capability(triton_server, tmp_path, model):
    """Through the fronts and their engines, as clients see them (sessions: test_benchmark_tools.py)."""
    data = tmp_path / "input.json"
    data.write_text(json.dumps(_perf_data(model)))
    streaming = [] if model == "voice_prompt" else ["--streaming"]
    command = [
        str(perf_analyzer_binary()),
        *("-m", model, "-u", triton_server.grpc_url, "-i", "grpc", *streaming),
        *("--input-data", str(data), "--concurrency-range", "2"),
        *("--measurement-mode", "count_windows", "--measurement-request-count", "2"),
        *("--max-trials", "3", "--stability-percentage", "1000"),
    ]
    run = subprocess.run(command, env=perf_analyzer_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Concurrency: 2" in run.stdout and "throughput" in run.stdout.lower()


# ------------------------------------------------------------------------- bad input from direct clients
def _next_error(calls: StreamingCalls, timeout: float = 60) -> str:
    """The next error on the stream (tritonclient passes them without the request's id)."""
    seen = len(calls.errors)
    deadline = time.monotonic() + timeout
    while len(calls.errors) == seen:
        calls._record(*calls.events.get(timeout=max(0.1, deadline - time.monotonic())))
    return calls.errors[-1]


def test_bad_input_from_a_direct_client_is_refused_alone_and_leaves_nothing_held(calls, triton_server):
    """What a client calling the models directly (no gateway) could get wrong, each refused with a short
    reason naming the rule, and the server left as it was: a request carrying a batch (it reached an engine
    and failed with Triton's words about another input), an over-long ref_text (it was tokenized into the
    prompt, pausing the batch) or clip (copied into the engine's shared memory for good), a second START of
    a live session (the live one lost its text and END), voice inputs on a session's later request (ignored
    without a word), and many refused STARTs (under Triton's sequence batcher each held a sequence slot
    until its idle timeout: every later session waited for one)."""
    batch = grpcclient.InferInput("text", [2, 1], "BYTES")
    batch.set_data_from_numpy(np.array([[b"One."], [b"Two."]], dtype=np.object_))
    speakers = grpcclient.InferInput("speaker", [2, 1], "BYTES")
    speakers.set_data_from_numpy(np.array([[b"ryan"], [b"ryan"]], dtype=np.object_))
    calls.results["batch"] = StreamResult()
    calls.client.async_stream_infer("custom_voice", [batch, speakers], request_id="batch")
    assert _next_error(calls) == (
        "a request is one stream: input 'text' has a batch of 2; "
        "send every input with batch size 1 (shape [1, ...])"
    )
    calls.send(
        "voice_clone", "ref-text", text="Hi.", ref_audio=_clip(), ref_sample_rate=24000, ref_text="x" * 2001
    )
    assert _next_error(calls) == "ref_text has 2001 characters; the limit is 2000"
    calls.send("voice_clone", "long-clip", text="Hi.", ref_audio=_clip(31.0), ref_sample_rate=24000)
    assert _next_error(calls) == "ref_audio is 31.0 s; at most 30 s is accepted"

    model = "custom_voice_session"
    _open_session(calls, model, 8801, "A session that is", speaker="ryan", do_sample=False)
    calls.results["again"] = StreamResult()
    calls.client.async_stream_infer(
        model,
        _session_inputs("Again", 8801, start=True, speaker="ryan"),
        request_id="again",
    )
    assert _next_error(calls) == "session 8801 is already running"
    calls.results["voice-later"] = StreamResult()
    calls.client.async_stream_infer(
        model, _session_inputs(" still", 8801, speaker="aiden"), request_id="voice-later"
    )
    assert (
        _next_error(calls) == "speaker: only a session's START takes them; later requests take text and flush"
    )
    calls.results["end"] = StreamResult()
    calls.client.async_stream_infer(
        model, _session_inputs(" going.", 8801, end=True), request_id="end", enable_empty_final_response=True
    )
    calls.wait()
    assert calls.results["s8801"].chunks[-1]["finish_reason"] == "stop", calls.errors
    assert len(calls.errors) == 5

    # More refused STARTs than the engine has slots (under Triton's sequence batcher each held a sequence slot
    # for its idle timeout), then a good session: it starts at once.
    slots = triton_server.settings.max_active_streams
    for index in range(slots + 6):
        calls.results[f"refused-{index}"] = StreamResult()
        calls.client.async_stream_infer(
            model,
            _session_inputs("", 9000 + index, start=True, speaker="nobody"),
            request_id=f"refused-{index}",
        )
    try:
        calls.wait(timeout=30)
    except queue.Empty:
        pytest.fail(
            f"{len(calls.errors) - 5} of {slots + 6} STARTs answered: the refused ones hold the slots"
        )
    assert len(calls.errors) == 5 + slots + 6 and "unknown speaker 'nobody'" in calls.errors[-1]
    started = time.monotonic()
    _open_session(calls, model, 9900, "Heard at once.", speaker="ryan", do_sample=False)
    _end_session(calls, model, 9900)
    calls.wait(timeout=120)
    assert calls.results["s9900"].chunks[-1]["is_last"]
    assert calls.results["s9900"].times[0] - started < 15
