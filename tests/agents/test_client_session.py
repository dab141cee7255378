"""The client's session helper and ``qwen3-tts say`` against the real gateway app under uvicorn, with the
fake engine (tests/gateway/fakes.py) standing in for Triton: the client's own logic, fast. The same calls
against the real models are in tests/e2e/test_agent_sessions.py and tests/e2e/test_agent_cli.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from qwen3_tts_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncQwen3TTSClient,
    AsyncSpeechSession,
    AuthenticationError,
    Qwen3TTSClient,
    ServiceUnavailableError,
    SpeechSession,
    UnprocessableEntityError,
)
from qwen3_tts_client.cli import main
from qwen3_tts_gateway.backend import SessionRequest
from qwen3_tts_gateway.embedded import serve_in_thread
from qwen3_tts_gateway.errors import EngineInvalidRequestError
from websockets.sync.server import serve as ws_serve

from gateway.fakes import SAMPLES_PER_CHAR, FakeEngine, FakeSession
from qwen3_tts_serving.settings import Settings


@dataclass
class PacedSession(FakeSession):
    """A fake session with the engine's timing scripted, so the gateway answers late or never: text is
    spoken ``answer_delay_s`` after it came (None: never, nor ``end``); with ``end_chunks``, ``end`` gives
    that many chunks ``end_gap_s`` apart, then the last one unless ``stalls`` (done then never comes)."""

    answer_delay_s: float | None = 0.0
    end_chunks: int = 0
    end_gap_s: float = 0.0
    stalls: bool = False
    _pacer: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        if self.answer_delay_s == 0.0:
            super().__post_init__()
        elif self.answer_delay_s is not None and self.request.synthesis.text:
            asyncio.get_running_loop().call_later(
                self.answer_delay_s, self._speak, self.request.synthesis.text
            )

    async def send_text(self, text: str, *, flush: bool = False) -> None:
        if self.answer_delay_s == 0.0:
            return await super().send_text(text, flush=flush)
        if self.finished or self.ended:
            raise EngineInvalidRequestError("the session has ended")
        self.fragments.append((text, flush))
        if text and self.answer_delay_s is not None:
            asyncio.get_running_loop().call_later(self.answer_delay_s, self._speak, text)
        return None

    async def end(self, text: str = "") -> None:
        if self.answer_delay_s == 0.0 and not self.end_chunks:
            return await super().end(text)
        if self.finished or self.ended:
            raise EngineInvalidRequestError("the session has ended")
        self.fragments.append((text, False))
        self.ended = True
        if self.answer_delay_s is not None:
            self._pacer = asyncio.ensure_future(self._pace())
        return None

    async def _pace(self) -> None:
        for _ in range(self.end_chunks):
            await asyncio.sleep(self.end_gap_s)
            self._speak("x")
        if not self.stalls:
            self._speak("", last=True, reason="stop")

    async def aclose(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
        await super().aclose()


@dataclass
class PacedEngine(FakeEngine):
    pace: dict[str, Any] = field(default_factory=dict)  # PacedSession's timing for the sessions it opens

    async def open_session(self, request: SessionRequest) -> FakeSession:
        session = PacedSession(
            f"{len(self.sessions) + 1:016x}",
            request,
            self.session_idle_timeout_s,
            self.session_error,
            **self.pace,
        )
        self.sessions.append(session)
        return session


@pytest.fixture
def engine() -> PacedEngine:
    return PacedEngine()


@pytest.fixture
def url(engine: FakeEngine, tmp_path: Path) -> Iterator[str]:
    from qwen3_tts_gateway import create_app

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        cache_dir=tmp_path,
        voice_db_path=tmp_path / "voices.db",
        api_keys=["key"],
        max_text_length=50,
    )
    with serve_in_thread(create_app(settings=settings, engine=engine)) as base_url:
        yield base_url


def test_sync_session(url: str, engine: FakeEngine) -> None:
    with Qwen3TTSClient(base_url=url, api_key="key") as client:
        with client.session(voice="vivian", language="en", seed=4) as session:
            assert session.session_id == engine.sessions[0].session_id and session.sample_rate == 24_000
            session.send_text("Hel")
            session.send_text("lo")
            session.flush()
            session.send_text("x" * 60)  # over the session's limit: refused, the session goes on
            session.end(" there.")
            audio, rate, reason = session.collect()
    assert (rate, reason) == (24_000, "stop")
    assert len(audio) == len("Hello there.") * SAMPLES_PER_CHAR
    assert [error.status_code for error in session.refused] == [422]
    assert engine.sessions[0].fragments == [("Hel", False), ("lo", False), ("", True), (" there.", False)]
    synthesis = engine.sessions[0].request.synthesis
    assert (synthesis.speaker, synthesis.language, synthesis.sampling.seed) == ("vivian", "english", 4)


def test_chunks_carry_encoded_bytes_for_other_formats(url: str) -> None:
    with Qwen3TTSClient(base_url=url, api_key="key") as client:
        with client.session(voice="ryan", format="mp3", json_chunks=True) as session:
            session.end("x" * 40)
            chunks = list(session)
    assert all(chunk.format == "mp3" and chunk.audio.size == 0 for chunk in chunks)
    audio, rate = sf.read(io.BytesIO(b"".join(chunk.data for chunk in chunks)))
    assert rate == 24_000 and abs(len(audio) - 40 * SAMPLES_PER_CHAR) < 2 * 1152


def test_errors(url: str) -> None:
    with Qwen3TTSClient(base_url=url, api_key="key") as client:
        with pytest.raises(UnprocessableEntityError, match="valid voices"):
            client.session(voice="nobody").open()
    with Qwen3TTSClient(base_url=url, api_key="wrong") as client:
        with pytest.raises(AuthenticationError):
            client.session(voice="ryan").open()
    with Qwen3TTSClient(base_url="http://127.0.0.1:9", timeout=5) as client:
        with pytest.raises(APIConnectionError):
            client.session(voice="ryan").open()


async def test_async_session(url: str, engine: FakeEngine) -> None:
    async with AsyncQwen3TTSClient(base_url=url, api_key="key") as client:
        async with client.session(voice="ryan", text="Hi. ") as session:
            first = await session.__aiter__().__anext__()
            await session.send_text("More")
            await session.end()
            audio, _, reason = await session.collect()
    assert len(first.audio) == 4 * SAMPLES_PER_CHAR and reason == "stop"
    assert len(audio) == 4 * SAMPLES_PER_CHAR


def test_cancel_once_the_session_is_over_is_a_no_op(url: str, engine: FakeEngine) -> None:
    """Cancel is idempotent: a barge-in that races the end of the speech is no error. Once the session is
    over (its done read, or the connection closed) cancel() sends nothing and never raises; a second cancel
    that crosses the first one's done is ignored by the gateway."""
    with Qwen3TTSClient(base_url=url, api_key="key") as client:
        with client.session(voice="ryan") as session:
            session.end("Hi.")
            assert session.collect()[2] == "stop"
            session.cancel()  # the done was read
        session.cancel()  # the connection is closed
        with client.session(voice="ryan") as stopped:
            stopped.send_text("Hello")
            next(iter(stopped))
            stopped.cancel()
            stopped.cancel()  # before the done is read: sent, and it crosses the done
            assert stopped.collect()[2] == "cancelled"
    assert session.refused == stopped.refused == []
    assert engine.sessions[1].cancelled and not engine.sessions[0].cancelled


async def test_async_cancel_once_the_session_is_over_is_a_no_op(url: str, engine: FakeEngine) -> None:
    async with AsyncQwen3TTSClient(base_url=url, api_key="key") as client:
        async with client.session(voice="ryan") as session:
            await session.end("Hi.")
            assert (await session.collect())[2] == "stop"
            await session.cancel()
        await session.cancel()
        async with client.session(voice="ryan") as stopped:
            await stopped.send_text("Hello")
            await stopped.__aiter__().__anext__()
            await stopped.cancel()
            await stopped.cancel()
            assert (await stopped.collect())[2] == "cancelled"
    assert session.refused == stopped.refused == []


def test_the_start_carries_an_id_that_the_session_events_echo(url: str) -> None:
    with Qwen3TTSClient(base_url=url, api_key="key") as client:
        with client.session(voice="ryan", json_chunks=True) as session:
            session.end("Hi.")
            chunks = list(session)
        with client.session(voice="ryan") as other:
            pass
    assert re.fullmatch(r"[0-9a-f]{32}", session.start_id) and other.start_id != session.start_id
    assert session.state.started is not None and session.state.started["id"] == session.start_id
    assert session.state.done is not None and session.state.done["id"] == session.start_id
    assert len(chunks) == 1 and session.finish_reason == "stop"


class ScriptedGateway:
    """A real WebSocket server (``websockets``) playing the gateway's side of /ws/session: after the start it
    sends ``before_started`` then ``started`` (under the start's id); after ``end``, ``after_end`` then
    ``done``. ``{start}`` in an event stands for the start's id. Records what it received."""

    def __init__(self, before_started: list[Any], after_end: list[Any]) -> None:
        self.before_started = before_started
        self.after_end = after_end
        self.received: list[dict[str, Any]] = []

    def _send(self, ws: Any, events: list[Any], start_id: str | None) -> None:
        for event in events:
            if isinstance(event, bytes):
                ws.send(event)
            else:
                ws.send(json.dumps({k: start_id if v == "{start}" else v for k, v in event.items()}))

    def handle(self, ws: Any) -> None:
        start_id = None
        for text in ws:
            message = json.loads(text)
            self.received.append(message)
            if message["type"] == "start":
                start_id = message.get("id")
                self._send(ws, self.before_started, start_id)
                started = {"type": "started", "session_id": "s", "sample_rate": 24_000, "id": start_id}
                self._send(ws, [started], start_id)
            if message["type"] == "end":
                self._send(ws, self.after_end, start_id)
                done = {"type": "done", "session_id": "s", "finish_reason": "stop", "id": start_id}
                self._send(ws, [done], start_id)


STALE = {"type": "error", "status": 422, "message": "stale", "reason": "no_session", "fatal": True}


@pytest.fixture
def scripted() -> Iterator[tuple[str, ScriptedGateway]]:
    """Events for other starts around this session's (stale answers on a reused socket, as a gateway or a
    proxy multiplexing sockets could send): every one of them must be ignored."""
    gateway = ScriptedGateway(
        before_started=[{**STALE, "id": "another-start"}],
        after_end=[
            {"type": "chunk", "sequence": 9, "format": "pcm", "audio": "AAAAAA==", "id": "another-start"},
            {**STALE, "reason": "text_too_long", "fatal": False, "id": "t-1", "start_id": "another-start"},
            {"type": "done", "session_id": "x", "finish_reason": "cancelled", "id": "another-start"},
            b"\x00\x40\x00\xc0",  # binary frames carry no id: this session's
            {**STALE, "reason": "text_too_long", "fatal": False, "start_id": "{start}"},  # ours: refused
            {**STALE, "reason": "protocol", "fatal": False},  # no mark (a gateway without ids): ours
        ],
    )
    with ws_serve(gateway.handle, "127.0.0.1", 0) as server:
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        try:
            yield f"http://127.0.0.1:{server.socket.getsockname()[1]}", gateway
        finally:
            server.shutdown()
            serving.join(timeout=10)


def test_events_marked_for_another_start_are_ignored(scripted: tuple[str, ScriptedGateway]) -> None:
    url, gateway = scripted
    with (
        Qwen3TTSClient(base_url=url, timeout=response_timeout(5)) as client,
        client.session(voice="ryan", format="pcm") as session,
    ):
        session.end("Hi.")
        audio, _, reason = session.collect()
    assert gateway.received[0]["id"] == session.start_id and session.session_id == "s"
    assert reason == "stop" and audio.tolist() == [0.5, -0.5]
    assert [error.status_code for error in session.refused] == [422, 422]


async def test_async_events_marked_for_another_start_are_ignored(
    scripted: tuple[str, ScriptedGateway],
) -> None:
    url, gateway = scripted
    async with (
        AsyncQwen3TTSClient(base_url=url, timeout=response_timeout(5)) as client,
        client.session(voice="ryan") as session,
    ):
        await session.end("Hi.")
        audio, _, reason = await session.collect()
    assert gateway.received[0]["id"] == session.start_id
    assert reason == "stop" and audio.tolist() == [0.5, -0.5] and len(session.refused) == 2


@pytest.mark.parametrize(("code", "reason"), [(1012, ""), (1013, "shutting down")])
async def test_a_gateway_that_closes_the_session_to_restart_is_service_unavailable(
    code: int, reason: str
) -> None:
    """uvicorn closes open sockets with 1012 when it restarts; a draining gateway closes new ones with 1013:
    the typed 503 that callers already handle, not a bare connection error."""

    def gateway(ws: Any) -> None:
        for text in ws:
            message = json.loads(text)
            if message["type"] == "start":
                ws.send(json.dumps({"type": "started", "session_id": "s", "sample_rate": 24_000}))
            if message["type"] == "end":
                ws.close(code, reason)

    with ws_serve(gateway, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        try:
            expected = f"the gateway closed the session (code {code}: {reason or 'restarting'}); retry"
            with Qwen3TTSClient(base_url=url, timeout=response_timeout(5)) as client:
                with pytest.raises(ServiceUnavailableError) as info, client.session(voice="ryan") as session:
                    session.end("Hi.")
                    session.collect()
            assert info.value.status_code == 503 and info.value.message == expected
            assert info.value.request is not None and info.value.request.operation == "session"
            async with AsyncQwen3TTSClient(base_url=url, timeout=response_timeout(5)) as aclient:
                with pytest.raises(ServiceUnavailableError, match=re.escape(expected)):
                    async with aclient.session(voice="ryan") as asession:
                        await asession.end("Hi.")
                        await asession.collect()
        finally:
            server.shutdown()


def response_timeout(seconds: float) -> httpx.Timeout:
    """The session's response timeout; the handshake keeps a roomy one (the CPUs here are shared)."""
    return httpx.Timeout(seconds, connect=10)


def read_all(session: SpeechSession) -> tuple[Any, float]:
    """(the audio or the exception that ended the read, when it ended)."""
    try:
        result: Any = session.collect()
    except Exception as exc:  # the test inspects what the read raised
        result = exc
    return result, time.monotonic()


async def read_all_async(session: AsyncSpeechSession) -> tuple[Any, float]:
    try:
        result: Any = await session.collect()
    except Exception as exc:
        result = exc
    return result, time.monotonic()


def test_quiet_time_with_nothing_owed_is_no_timeout(url: str, engine: PacedEngine) -> None:
    """The client's own quiet time (the LLM thinks, the user talks) is not gateway silence; a late answer
    to a late send is on time."""
    engine.pace = {"answer_delay_s": 0.1}
    with (
        ThreadPoolExecutor(1) as pool,
        Qwen3TTSClient(base_url=url, api_key="key", timeout=response_timeout(0.3)) as client,
    ):
        with client.session(voice="ryan") as session:
            reading = pool.submit(read_all, session)  # the reader waits all along, as a player would
            time.sleep(0.45)  # nothing sent, nothing owed
            session.send_text("Hello there.")  # answered 0.1 s later: 0.55 s after the gateway's last message
            time.sleep(0.5)  # all spoken
            session.end()
            result, _ = reading.result(timeout=10)
    assert not isinstance(result, Exception), result
    audio, _, reason = result
    assert reason == "stop" and len(audio) == len("Hello there.") * SAMPLES_PER_CHAR


def test_a_gateway_that_never_answers_times_out_although_text_keeps_going_out(
    url: str, engine: PacedEngine
) -> None:
    engine.pace = {"answer_delay_s": None}
    timeout_s = 0.3
    client = Qwen3TTSClient(base_url=url, api_key="key", timeout=response_timeout(timeout_s))
    with ThreadPoolExecutor(1) as pool, client, client.session(voice="ryan") as session:
        # The reader waits with nothing owed: a send from this thread must start its clock.
        reading = pool.submit(read_all, session)
        time.sleep(0.1)
        first_send = time.monotonic()
        for _ in range(30):  # 1.2 s of text (30 characters: under the limit of 50, no refusal answers it)
            try:
                session.send_text("w")
            except APIConnectionError:  # closed by the timeout
                break
            time.sleep(0.04)
        error, ended = reading.result(timeout=10)
    assert isinstance(error, APITimeoutError), error
    waited = ended - first_send
    # From the first send (not from the read, not from the last send): later sends do not restart it.
    assert timeout_s <= waited < timeout_s + 0.5, f"timed out {waited:.2f} s after the first send"


def test_a_gateway_that_does_not_answer_end_or_a_first_fragment_times_out(
    url: str, engine: PacedEngine
) -> None:
    engine.pace = {"answer_delay_s": None}
    with Qwen3TTSClient(base_url=url, api_key="key", timeout=response_timeout(0.3)) as client:
        with client.session(voice="ryan") as session:
            session.end("Hi.")
            with pytest.raises(APITimeoutError, match="no answer from the gateway within 0.3 s"):
                session.collect()
        # ``started`` answers the start, not the fragment in it: its audio is still owed.
        with client.session(voice="ryan", text="Hello.") as session, pytest.raises(APITimeoutError):
            session.collect()


def test_after_end_every_silence_counts_until_done_and_steady_audio_is_not_cut(
    url: str, engine: PacedEngine
) -> None:
    engine.pace = {"end_chunks": 5, "end_gap_s": 0.1}  # 0.5 s of audio (twice the timeout), gaps of 0.1 s
    with Qwen3TTSClient(base_url=url, api_key="key", timeout=response_timeout(0.25)) as client:
        with client.session(voice="ryan") as session:
            session.end("Hi.")
            audio, _, reason = session.collect()
        assert reason == "stop" and len(audio) == 5 * SAMPLES_PER_CHAR
        engine.pace = {"end_chunks": 5, "end_gap_s": 0.1, "stalls": True}  # then done never comes
        with client.session(voice="ryan") as session:
            session.end("Hi.")
            chunks: list[Any] = []
            with pytest.raises(APITimeoutError):
                chunks.extend(session)
        assert len(chunks) == 5


async def test_async_quiet_time_is_no_timeout_and_a_silent_gateway_times_out(
    url: str, engine: PacedEngine
) -> None:
    engine.pace = {"answer_delay_s": 0.1}
    async with AsyncQwen3TTSClient(base_url=url, api_key="key", timeout=response_timeout(0.3)) as client:
        async with client.session(voice="ryan") as session:
            reading = asyncio.ensure_future(session.collect())  # waits all along, as a player would
            await asyncio.sleep(0.45)  # nothing sent, nothing owed
            await session.send_text("Hello there.")
            await asyncio.sleep(0.5)
            await session.end()
            audio, _, reason = await asyncio.wait_for(reading, 10)
        assert reason == "stop" and len(audio) == len("Hello there.") * SAMPLES_PER_CHAR
        engine.pace = {"answer_delay_s": None}
        async with client.session(voice="ryan") as session:
            reading = asyncio.ensure_future(read_all_async(session))  # waits with nothing owed
            await asyncio.sleep(0.1)
            first_send = time.monotonic()
            for _ in range(30):  # a send from another task starts the reader's clock; later ones do not
                try:
                    await session.send_text("w")
                except APIConnectionError:  # closed by the timeout
                    break
                await asyncio.sleep(0.04)
            error, ended = await asyncio.wait_for(reading, 10)
    assert isinstance(error, APITimeoutError), error
    waited = ended - first_send
    assert 0.3 <= waited < 0.8, f"timed out {waited:.2f} s after the first send"


def test_cli_say_text(url: str, tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    code = main(["--base-url", url, "--api-key", "key", "say", "Hello there.", "-v", "ryan", "-o", str(out)])
    assert code == 0
    audio, rate = sf.read(out)
    assert rate == 24_000 and len(audio) == len("Hello there.") * SAMPLES_PER_CHAR


def test_cli_say_streams_stdin_as_it_arrives(url: str, tmp_path: Path, engine: FakeEngine) -> None:
    """Through a real pipe: audio is written before stdin reaches EOF."""
    out = tmp_path / "agent.wav"
    read_fd, write_fd = os.pipe()
    grew_before_eof = threading.Event()

    def llm() -> None:
        os.write(write_fd, b"Hello ")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size <= 44):
            time.sleep(0.02)
        if out.exists() and out.stat().st_size > 44:
            grew_before_eof.set()
        os.write(write_fd, "wörld.\n".encode())  # a UTF-8 character split across reads is fine too
        os.close(write_fd)

    writer = threading.Thread(target=llm, daemon=True)
    writer.start()
    with os.fdopen(read_fd, "r", encoding="utf-8") as stdin:
        args = ["--base-url", url, "--api-key", "key", "say", "--stream-input", "-o", str(out)]
        code = main(args, stdin=stdin, stderr=io.StringIO())
    writer.join()
    assert code == 0 and grew_before_eof.is_set()
    audio, _ = sf.read(out)  # the header's sizes were patched at the end
    assert len(audio) == len("Hello wörld.\n") * SAMPLES_PER_CHAR
    assert "".join(text for text, _ in engine.sessions[0].fragments) == "Hello wörld.\n"


def test_cli_say_usage(url: str) -> None:
    stderr = io.StringIO()
    code = main(
        ["--base-url", url, "say", "--stream-input", "text too"], stderr=stderr, stdin=io.StringIO("")
    )
    assert code == 2 and "--stream-input reads the text from stdin" in stderr.getvalue()
    stderr = io.StringIO()
    assert main(["--base-url", url, "say", "x", "--format", "mp3"], stderr=stderr) == 2


def test_cli_say_reports_a_refused_start(url: str) -> None:
    stderr = io.StringIO()
    code = main(
        ["--base-url", url, "--api-key", "key", "say", "Hi.", "-v", "nobody"],
        stdout=io.BytesIO(),
        stderr=stderr,
    )
    assert code == 4 and "valid voices" in stderr.getvalue()
