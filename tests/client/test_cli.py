"""The qwen3-tts command line: argument handling, exit codes and messages, against a real local server."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from qwen3_tts_client.cli import main

from .servers import Reply, ScriptedServer, error_reply, ndjson_reply, pcm_reply, refused_url

VOICE = {"id": "0123456789abcdef", "voice": "qwen3-clone-0123456789abcdef", "name": "Me", "ref_text": "hello",
         "x_vector_only": False, "duration_s": 4.0, "created_at": 1700000000.0}  # fmt: skip


@dataclass
class Run:
    code: int
    stdout: bytes
    stderr: str


class TtyBytesIO(io.BytesIO):
    def isatty(self) -> bool:
        return True


def run(*argv: str, stdin: str = "", stdout: io.BytesIO | None = None) -> Run:
    out, err = stdout or io.BytesIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return Run(code, out.getvalue(), err.getvalue())


def base(server: ScriptedServer) -> list[str]:
    return ["--base-url", server.url, "--max-retries", "0"]


# --------------------------------------------------------------------------------------- usage (exit 2)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["speak", "--format", "aiff", "hi"],
        ["design", "hello"],  # --instruct is required
        ["clone"],
        ["voices", "delete"],
        ["--timeout", "soon", "speak", "hi"],
    ],
)
def test_argparse_usage_errors_exit_2(argv: list[str]) -> None:
    result = run(*argv)
    assert result.code == 2
    assert "usage:" in result.stderr


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "speak" in capsys.readouterr().out


def test_text_and_file_together(scripted: ScriptedServer, tmp_path: Path) -> None:
    text_file = tmp_path / "t.txt"
    text_file.write_text("hi")
    result = run(*base(scripted), "speak", "hi", "--file", str(text_file), "-o", str(tmp_path / "o.wav"))
    assert result.code == 2 and "not both" in result.stderr
    assert scripted.requests == []


def test_missing_text_file(scripted: ScriptedServer, tmp_path: Path) -> None:
    result = run(
        *base(scripted), "speak", "--file", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o.wav")
    )
    assert result.code == 2 and "cannot read" in result.stderr and "nope.txt" in result.stderr


@pytest.mark.parametrize("text", ["   \n", "\u200b \ufeff\n"])  # nothing visible: the server would refuse it
def test_empty_text(scripted: ScriptedServer, tmp_path: Path, text: str) -> None:
    result = run(*base(scripted), "speak", "-o", str(tmp_path / "o.wav"), stdin=text)
    assert result.code == 2 and "empty" in result.stderr
    assert scripted.requests == []
    result = run(*base(scripted), "say", "--voice", "ryan", "-o", str(tmp_path / "o.wav"), stdin=text)
    assert result.code == 2 and "the text is empty" in result.stderr
    assert scripted.requests == []


def test_refuses_to_write_audio_to_a_terminal(scripted: ScriptedServer) -> None:
    result = run(*base(scripted), "speak", "hi", stdout=TtyBytesIO())
    assert result.code == 2 and "-o FILE" in result.stderr
    assert scripted.requests == []  # checked before spending GPU time


def test_bad_max_chars(scripted: ScriptedServer, tmp_path: Path) -> None:
    result = run(*base(scripted), "speak", "hi", "--max-chars", "0", "-o", str(tmp_path / "o.wav"))
    assert result.code == 2


def test_missing_reference_clip(scripted: ScriptedServer, tmp_path: Path) -> None:
    result = run(*base(scripted), "clone", str(tmp_path / "missing.wav"), "--ref-text", "hi")
    assert result.code == 2 and "missing.wav" in result.stderr


# --------------------------------------------------------------------------------------- server errors


def test_connection_refused_exit_3() -> None:
    url = refused_url()
    result = run("--base-url", url, "--max-retries", "0", "voices", "list")
    assert result.code == 3
    assert f"is the gateway running at {url}?" in result.stderr


def test_client_error_exit_4_shows_the_server_message(scripted: ScriptedServer, tmp_path: Path) -> None:
    message = "unknown voice 'bob'; valid voices: serena, vivian, or qwen3-clone-<id> from /voices"
    scripted.script(error_reply(422, message))
    result = run(*base(scripted), "speak", "hi", "--voice", "bob", "-o", str(tmp_path / "o.wav"))
    assert result.code == 4
    assert message in result.stderr
    assert not (tmp_path / "o.wav").exists()


def test_unauthorized_hints_at_the_api_key(scripted: ScriptedServer) -> None:
    scripted.script(error_reply(401, "missing API key (Authorization: Bearer <key>)"))
    result = run(*base(scripted), "voices")
    assert result.code == 4 and "--api-key" in result.stderr


def test_server_error_exit_5(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.script(error_reply(503, "the model server is overloaded; retry later", **{"Retry-After": "7"}))
    result = run(*base(scripted), "speak", "hi", "-o", str(tmp_path / "o.wav"))
    assert result.code == 5
    assert "overloaded" in result.stderr and "retry in 7s" in result.stderr


def test_api_key_is_sent(scripted: ScriptedServer) -> None:
    scripted.script(Reply(200, {"voices": []}))
    run(*base(scripted), "--api-key", "sekret", "voices")
    assert scripted.requests[0].headers["Authorization"] == "Bearer sekret"


def test_base_url_from_environment(scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN3_TTS_BASE_URL", scripted.url)
    scripted.script(Reply(200, {"voices": []}))
    assert run("voices").code == 0
    assert len(scripted.requests) == 1


# --------------------------------------------------------------------------------------- speak / design


def test_speak_single_piece_writes_the_gateways_file(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.script(Reply(200, b"ID3-fake-mp3", {"Content-Type": "audio/mpeg", "X-Sample-Rate": "24000"}))
    out = tmp_path / "hello.mp3"
    argv = [
        *base(scripted),
        "speak",
        "Hello there.",
        "-v",
        "ryan",
        "-l",
        "english",
        "-i",
        "calm",
        "-o",
        str(out),
    ]
    result = run(*argv, "--seed", "3", "--greedy")
    assert result.code == 0, result.stderr
    assert out.read_bytes() == b"ID3-fake-mp3"
    assert scripted.requests[0].json() == {
        "text": "Hello there.",
        "voice": "ryan",
        "language": "english",
        "instruct": "calm",
        "response_format": "mp3",  # from the extension
        "seed": 3,
        "do_sample": False,
    }


def test_speak_long_text_is_split_and_concatenated_in_order(scripted: ScriptedServer, tmp_path: Path) -> None:
    # Each fits --max-chars 24, no two together do: one request per sentence.
    sentences = [
        "First sentence here.",
        "Dr. Who says 3.14 is pi.",
        "第三句很长很长很长很长很长很长很长。",
        "Last one, the final!",
    ]
    levels = [0.1, 0.2, 0.3, 0.4]
    scripted.script(*[pcm_reply(np.full(2400, level, np.float32)) for level in levels])
    text_file = tmp_path / "long.txt"
    text_file.write_text(" ".join(sentences), encoding="utf-8")
    out = tmp_path / "long.wav"
    result = run(*base(scripted), "speak", "--file", str(text_file), "--max-chars", "24", "-o", str(out))
    assert result.code == 0, result.stderr

    bodies = [request.json() for request in scripted.requests]
    assert [body["text"] for body in bodies] == sentences
    assert {body["response_format"] for body in bodies} == {"pcm"}  # raw pieces, encoded once locally
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and len(audio) == 4 * 2400
    assert np.allclose(audio[::2400], levels, atol=1e-3)  # in order
    assert result.stderr.count("pieces") == 4 and "4/4 pieces" in result.stderr


@pytest.mark.parametrize(
    ("voice", "sent"),
    [
        ("vivian", "vivian"),
        ("qwen3-vivian", "vivian"),
        ("qwen3-clone-ab12", "qwen3-clone-ab12"),
        ("bob", "bob"),
    ],
)
def test_provider_style_voice_ids_are_accepted(scripted: ScriptedServer, voice: str, sent: str) -> None:
    scripted.script(Reply(200, b"RIFF", {"Content-Type": "audio/wav"}))
    assert run(*base(scripted), "speak", "hi", "--voice", voice).code == 0
    assert scripted.requests[0].json()["voice"] == sent


def test_speak_to_stdout(scripted: ScriptedServer) -> None:
    scripted.script(Reply(200, b"RIFFdata", {"Content-Type": "audio/wav"}))
    result = run(*base(scripted), "speak", "hi")
    assert result.code == 0 and result.stdout == b"RIFFdata"


def test_quiet_hides_progress(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.script(*[pcm_reply(np.zeros(10, np.float32)) for _ in range(2)])
    result = run(
        *base(scripted), "-q", "speak", "One. Two.", "--max-chars", "4", "-o", str(tmp_path / "o.flac")
    )
    assert result.code == 0 and result.stderr == ""
    assert sf.info(str(tmp_path / "o.flac")).format == "FLAC"


def test_design_sends_the_description(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.script(Reply(200, b"RIFF", {"Content-Type": "audio/wav"}))
    result = run(
        *base(scripted), "design", "Welcome.", "-i", "a deep calm voice", "-o", str(tmp_path / "d.wav")
    )
    assert result.code == 0, result.stderr
    request = scripted.requests[0]
    assert request.path == "/design"
    assert request.json() == {"text": "Welcome.", "instruct": "a deep calm voice", "response_format": "wav"}


# --------------------------------------------------------------------------------------- stream


def test_stream_writes_a_wav_with_real_sizes(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.script(ndjson_reply([np.full(480, 0.5, np.float32), np.full(240, -0.5, np.float32)]))
    out = tmp_path / "s.wav"
    result = run(*base(scripted), "stream", "Hello.", "-o", str(out))
    assert result.code == 0, result.stderr
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and len(audio) == 720
    assert sf.info(str(out)).frames == 720  # the header was patched with the real size
    assert scripted.requests[0].path == "/synthesize/stream"


def test_stream_raw_pcm_to_stdout(scripted: ScriptedServer) -> None:
    scripted.script(ndjson_reply([np.full(100, 0.25, np.float32)]))
    result = run(*base(scripted), "stream", "Hi.", "--format", "pcm")
    assert result.code == 0, result.stderr
    samples = np.frombuffer(result.stdout, dtype="<i2")
    assert len(samples) == 100 and abs(samples[0] / 32767 - 0.25) < 1e-3


def test_stream_several_pieces_in_order(scripted: ScriptedServer) -> None:
    scripted.script(
        ndjson_reply([np.full(10, 0.1, np.float32)]), ndjson_reply([np.full(10, 0.2, np.float32)])
    )
    result = run(*base(scripted), "stream", "One. Two.", "--max-chars", "4", "--format", "pcm")
    assert result.code == 0, result.stderr
    samples = np.frombuffer(result.stdout, dtype="<i2") / 32767
    assert np.allclose(samples, [0.1] * 10 + [0.2] * 10, atol=1e-3)


def test_stream_refuses_unstreamable_format(scripted: ScriptedServer, tmp_path: Path) -> None:
    result = run(*base(scripted), "stream", "Hi.", "-o", str(tmp_path / "x.mp3"))
    assert result.code == 2 and "use 'speak'" in result.stderr


# --------------------------------------------------------------------------------------- clone / voices


def test_clone_prints_the_saved_voice_id(scripted: ScriptedServer, tmp_path: Path) -> None:
    clip = tmp_path / "me.wav"
    sf.write(clip, np.zeros(24000 * 4, np.float32), 24000)
    scripted.script(Reply(201, VOICE))
    result = run(*base(scripted), "clone", str(clip), "--ref-text", "hello", "--name", "Me")
    assert result.code == 0, result.stderr
    assert result.stdout == b"0123456789abcdef\n"
    assert "--voice qwen3-clone-0123456789abcdef" in result.stderr
    body = scripted.requests[0].json()
    assert scripted.requests[0].path == "/voices"
    assert body["ref_text"] == "hello" and body["name"] == "Me" and "x_vector_only" not in body
    assert base64.b64decode(body["ref_audio"]) == clip.read_bytes()


def test_voices_list_table_and_json(scripted: ScriptedServer) -> None:
    scripted.script(Reply(200, {"voices": [VOICE]}), Reply(200, {"voices": [VOICE]}))
    table = run(*base(scripted), "voices", "list")
    assert table.code == 0 and b"qwen3-clone-0123456789abcdef" in table.stdout and b"Me" in table.stdout
    as_json = run(*base(scripted), "voices", "list", "--json")
    assert json.loads(as_json.stdout)[0]["id"] == "0123456789abcdef"


def test_voices_empty_list_hints(scripted: ScriptedServer) -> None:
    scripted.script(Reply(200, {"voices": []}))
    result = run(*base(scripted), "voices")
    assert result.code == 0 and result.stdout == b"" and "qwen3-tts clone" in result.stderr


def test_voices_delete_several(scripted: ScriptedServer) -> None:
    scripted.script(Reply(204, b""), Reply(204, b""))
    result = run(*base(scripted), "voices", "delete", "qwen3-clone-0123456789abcdef", "fedcba9876543210")
    assert result.code == 0
    assert [(r.method, r.path) for r in scripted.requests] == [
        ("DELETE", "/voices/0123456789abcdef"),
        ("DELETE", "/voices/fedcba9876543210"),
    ]


def test_voices_delete_missing_exit_4(scripted: ScriptedServer) -> None:
    scripted.script(error_reply(404, "voice not found"))
    result = run(*base(scripted), "voices", "delete", "0123456789abcdef")
    assert result.code == 4 and "voice not found" in result.stderr


# --------------------------------------------------------------------------------------- as a process


def _module(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QWEN3_TTS_BASE_URL": refused_url()}
    return subprocess.run(
        [sys.executable, "-m", "qwen3_tts_client.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_module_entry_point_help_and_version() -> None:
    assert _module("--help").returncode == 0
    version = _module("--version")
    assert version.returncode == 0 and "qwen3-tts" in version.stdout


def test_module_entry_point_connection_refused() -> None:
    result = _module("--max-retries", "0", "voices")
    assert result.returncode == 3
    assert "is the gateway running at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
