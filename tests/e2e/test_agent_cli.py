"""``some-llm | qwen3-tts say --stream-input -v ryan -o out.wav`` against the real stack: the CLI runs as
its own process, its stdin is a pipe fed a word at a time, and audio lands in the file before the pipe
closes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from .conftest import Gateway

pytestmark = pytest.mark.e2e

WORDS = "The agent keeps talking while the model keeps writing, word after word after word.".split(" ")


def test_say_stream_input_writes_audio_as_stdin_arrives(agent_gateway: Gateway, tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    command = [sys.executable, "-m", "qwen3_tts_client.cli", "--base-url", agent_gateway.url, "say"]
    command += ["--stream-input", "-v", "ryan", "-l", "english", "--greedy", "--max-new-tokens", "120"]
    command += ["-o", str(out)]
    cli = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cli.stdin is not None
    size_before_eof = 0
    try:
        for word in WORDS:
            cli.stdin.write(f"{word} ".encode())
            cli.stdin.flush()
            time.sleep(0.3)  # an LLM's pace
        size_before_eof = out.stat().st_size if out.exists() else 0
        cli.stdin.close()
        assert cli.wait(timeout=300) == 0, cli.stderr.read().decode() if cli.stderr else ""
    finally:
        if cli.poll() is None:
            cli.kill()
    assert size_before_eof > 44, "no audio was written before stdin closed"
    audio, rate = sf.read(out)  # the WAV sizes were patched when the session ended
    assert rate == 24_000 and len(audio) * 2 + 44 >= size_before_eof
