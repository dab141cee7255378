"""The client's session helper and ``qwen3-tts say`` against the real gateway app under uvicorn, with the
fake engine (tests/gateway/fakes.py) standing in for Triton: the client's own logic, fast. The same calls
against the real models are in tests/e2e/test_agent_sessions.py and tests/e2e/test_agent_cli.py.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from qwen3_tts_client import (
    APIConnectionError,
    AsyncQwen3TTSClient,
    AuthenticationError,
    Qwen3TTSClient,
    UnprocessableEntityError,
)
from qwen3_tts_client.cli import main
from qwen3_tts_gateway.embedded import serve_in_thread

from gateway.fakes import SAMPLES_PER_CHAR, FakeEngine
from qwen3_tts_serving.settings import Settings


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


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
