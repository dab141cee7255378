"""``qwen3-tts``: speak, stream, clone, design and manage voices from the command line.

Exit codes: 0 ok, 1 unexpected error, 2 usage (bad arguments, unreadable input file), 3 the gateway
could not be reached, 4 the gateway rejected the request (4xx, its message is shown), 5 the gateway
failed (5xx), 130 interrupted. Audio goes to ``-o FILE`` or stdout; messages go to stderr.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from qwen3_tts_serving.text_rules import is_blank

from . import __version__
from ._core import ENV_API_KEY, ENV_BASE_URL, resolve_base_url
from .audio import encode_audio, pcm16_to_float, streaming_wav_header
from .client import Qwen3TTSClient
from .errors import APIConnectionError, APIStatusError, Qwen3TTSError
from .routing import CLONE_PREFIX, UnknownVoiceError, route_voice
from .session import SpeechSession
from .text import DEFAULT_MAX_CHARS, chunk_text
from .types import SpeechResult

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONNECTION, EXIT_CLIENT_ERROR, EXIT_SERVER_ERROR = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130

FORMATS = ("wav", "flac", "mp3", "opus", "pcm")
STREAM_FORMATS = ("wav", "pcm")
_EXTENSIONS = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".pcm": "pcm"}
_EXTENSIONS[".raw"] = "pcm"
DEFAULT_VOICE = "vivian"


class UsageError(Exception):
    """A problem with the command line or local files: exit 2 with the message."""


# ------------------------------------------------------------------------------------------ parser


def _sampling_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("sampling")
    group.add_argument("--seed", type=int, help="make sampling reproducible")
    group.add_argument("--temperature", type=float)
    group.add_argument("--top-k", type=int)
    group.add_argument("--top-p", type=float)
    group.add_argument("--repetition-penalty", type=float)
    group.add_argument("--max-new-tokens", type=int, help="upper bound on codec frames per piece")
    group.add_argument("--greedy", action="store_true", help="disable sampling (do_sample=false)")
    return parent


def _text_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("text", nargs="?", help="text to speak (or --file, or piped on stdin)")
    parent.add_argument("-f", "--file", type=Path, help="read the text from FILE ('-' for stdin)")
    parent.add_argument("-l", "--language", help="auto (default), english, chinese, ... or an ISO code")
    parent.add_argument("-o", "--output", type=Path, help="write the audio to FILE (default: stdout)")
    parent.add_argument(
        "--max-chars",
        type=int,
        default=DEFAULT_MAX_CHARS,
        metavar="N",
        help=f"split longer texts at sentence ends into pieces of at most N characters ({DEFAULT_MAX_CHARS})",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen3-tts",
        description="Qwen3-TTS from the command line, through the gateway.",
        epilog="Exit codes: 2 usage, 3 gateway unreachable, 4 request rejected (4xx), 5 gateway error (5xx).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--base-url", help=f"gateway URL (default ${ENV_BASE_URL} or {resolve_base_url(None)})"
    )
    parser.add_argument("--api-key", help=f"Bearer API key (default ${ENV_API_KEY})")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    parser.add_argument("--max-retries", type=int, default=2, help="retries of 408/429/5xx (default 2)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or hints on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    text, sampling = _text_parent(), _sampling_parent()

    speak = commands.add_parser("speak", parents=[text, sampling], help="synthesize text to a file")
    speak.add_argument(
        "-v", "--voice", default=DEFAULT_VOICE, help="timbre or qwen3-clone-<id> (default vivian)"
    )
    speak.add_argument("-i", "--instruct", help="style instruction, e.g. 'speak slowly and warmly'")
    speak.add_argument(
        "--format", choices=FORMATS, help="audio format (default: from -o's extension, else wav)"
    )

    stream = commands.add_parser("stream", parents=[text, sampling], help="write audio as it is generated")
    stream.add_argument(
        "-v", "--voice", default=DEFAULT_VOICE, help="timbre or qwen3-clone-<id> (default vivian)"
    )
    stream.add_argument("-i", "--instruct", help="style instruction")
    stream.add_argument("--format", choices=STREAM_FORMATS, help="wav (default) or raw s16le pcm")

    say = commands.add_parser(
        "say",
        parents=[text, sampling],
        help="speak through a voice-agent session (--stream-input: text from stdin as it arrives)",
        description="Speak through a voice-agent session: with --stream-input, stdin is sent as it arrives "
        "(e.g. `some-llm | qwen3-tts say --stream-input -v ryan -o out.wav`) and audio is written as it "
        "is generated.",
    )
    say.add_argument(
        "-v", "--voice", default=DEFAULT_VOICE, help="timbre or qwen3-clone-<id> (default vivian)"
    )
    say.add_argument("-i", "--instruct", help="style instruction")
    say.add_argument("--format", choices=STREAM_FORMATS, help="wav (default) or raw s16le pcm")
    say.add_argument(
        "--stream-input", action="store_true", help="send stdin as it arrives, without waiting for EOF"
    )
    say.add_argument(
        "--lookahead",
        type=int,
        metavar="N",
        help="text tokens kept ahead of the voice (0-64): prosody vs latency",
    )

    design = commands.add_parser(
        "design", parents=[text, sampling], help="speak in a voice described in words"
    )
    design.add_argument("-i", "--instruct", required=True, help="the voice description")
    design.add_argument(
        "--format", choices=FORMATS, help="audio format (default: from -o's extension, else wav)"
    )

    clone = commands.add_parser("clone", help="save a voice from a reference clip; prints its id")
    clone.add_argument("audio", type=Path, help="reference clip (wav, flac, mp3, ogg; 3-30 s)")
    clone.add_argument("--ref-text", help="transcript of the clip (better cloning)")
    clone.add_argument("--name", help="a name to remember the voice by")
    clone.add_argument("--x-vector-only", action="store_true", help="clone from the speaker embedding only")

    voices = commands.add_parser("voices", help="list, show or delete saved voices")
    actions = voices.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="list saved voices (the default)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = actions.add_parser("get", help="show one voice as JSON")
    show.add_argument("voice_id")
    delete = actions.add_parser("delete", help="delete saved voices")
    delete.add_argument("voice_ids", nargs="+", metavar="voice_id")
    return parser


# ------------------------------------------------------------------------------------------ helpers


@dataclass
class Console:
    """Where output goes; tests pass their own streams."""

    stdout: BinaryIO
    stderr: TextIO
    quiet: bool = False

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stderr)

    def error(self, message: str) -> None:
        print(f"qwen3-tts: error: {message}", file=self.stderr)


class Progress:
    """``[#####-----] 3/7 pieces`` on stderr: redrawn in place on a terminal, one line each otherwise."""

    def __init__(self, total: int, console: Console, width: int = 30) -> None:
        self.total, self.console, self.width = total, console, width
        self.enabled = total > 1 and not console.quiet
        self.tty = console.stderr.isatty()
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        filled = self.width * done // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {done}/{self.total} pieces {time.monotonic() - self.started:.1f}s"
        if self.tty:
            end = "\n" if done == self.total else ""
            self.console.stderr.write(f"\r{line}{end}")
        else:
            self.console.stderr.write(line + "\n")
        self.console.stderr.flush()


def read_text(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.text is not None and args.file is not None:
        raise UsageError("give the text either as an argument or with --file, not both")
    if args.file is not None:
        if str(args.file) == "-":
            return stdin.read()
        try:
            return args.file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{args.file} is not UTF-8 text") from None
    if args.text is not None:
        return args.text
    if not stdin.isatty():
        return stdin.read()
    raise UsageError("no text: give it as an argument, with --file FILE, or on stdin")


def pieces_of(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    if args.max_chars < 1:
        raise UsageError("--max-chars must be at least 1")
    pieces = chunk_text(read_text(args, stdin), args.max_chars)
    if not pieces:
        raise UsageError("the text is empty")
    return pieces


def output_format(args: argparse.Namespace, default: str = "wav") -> str:
    if args.format:
        return args.format
    if args.output is not None:
        return _EXTENSIONS.get(args.output.suffix.lower(), default)
    return default


def gateway_voice(voice: str) -> str:
    """The gateway's ``voice``: provider-style ``qwen3-<timbre>`` ids are accepted too."""
    try:
        route = route_voice(voice)
    except UnknownVoiceError:
        return voice  # a bare timbre (or a typo the gateway will explain)
    return route.voice_id if route.kind == "clone" else route.target


def sampling_of(args: argparse.Namespace) -> dict[str, Any]:
    options = {
        "seed": args.seed,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "max_new_tokens": args.max_new_tokens,
        "do_sample": False if args.greedy else None,
    }
    return {key: value for key, value in options.items() if value is not None}


def open_output(path: Path | None, console: Console) -> BinaryIO:
    if path is None:
        if console.stdout.isatty():
            raise UsageError("refusing to write audio to a terminal; use -o FILE or redirect stdout")
        return console.stdout
    try:
        return path.open("wb")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_output(path: Path | None, data: bytes, console: Console) -> None:
    sink = open_output(path, console)
    try:
        sink.write(data)
        sink.flush()
    finally:
        if sink is not console.stdout:
            sink.close()


# ------------------------------------------------------------------------------------------ commands


def synthesize_pieces(
    pieces: list[str], fmt: str, synthesize: Callable[[str, str], SpeechResult], console: Console
) -> bytes:
    """One piece: the gateway's file as is. Several: raw PCM each, concatenated and encoded here."""
    progress = Progress(len(pieces), console)
    if len(pieces) == 1:
        result = synthesize(pieces[0], fmt)
        progress.update(1)
        return result.audio
    samples: list[np.ndarray] = []
    sample_rate = 24000
    for done, piece in enumerate(pieces, start=1):
        result = synthesize(piece, "pcm")
        samples.append(pcm16_to_float(result.audio))
        sample_rate = result.sample_rate or sample_rate
        progress.update(done)
    audio = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    return encode_audio(audio, sample_rate, fmt)


def _write_synthesis(
    args: argparse.Namespace,
    console: Console,
    stdin: TextIO,
    synthesize: Callable[[str, str, dict[str, Any]], SpeechResult],
) -> int:
    pieces, fmt, sampling = pieces_of(args, stdin), output_format(args), sampling_of(args)
    if args.output is None and console.stdout.isatty():
        # Checked before synthesizing: finding out after a minute of GPU time would be rude.
        raise UsageError("refusing to write audio to a terminal; use -o FILE or redirect stdout")
    audio = synthesize_pieces(
        pieces, fmt, lambda text, piece_fmt: synthesize(text, piece_fmt, sampling), console
    )
    write_output(args.output, audio, console)
    if args.output is not None:
        console.info(f"wrote {args.output}")
    return EXIT_OK


def cmd_speak(client: Qwen3TTSClient, args: argparse.Namespace, console: Console, stdin: TextIO) -> int:
    def synthesize(text: str, fmt: str, sampling: dict[str, Any]) -> SpeechResult:
        return client.speak(
            text,
            voice=gateway_voice(args.voice),
            language=args.language,
            instruct=args.instruct,
            response_format=fmt,
            **sampling,
        )

    return _write_synthesis(args, console, stdin, synthesize)


def cmd_design(client: Qwen3TTSClient, args: argparse.Namespace, console: Console, stdin: TextIO) -> int:
    def synthesize(text: str, fmt: str, sampling: dict[str, Any]) -> SpeechResult:
        return client.design(
            text, instruct=args.instruct, language=args.language, response_format=fmt, **sampling
        )

    return _write_synthesis(args, console, stdin, synthesize)


def stream_pcm(client: Qwen3TTSClient, args: argparse.Namespace, piece: str) -> Iterator[tuple[int, bytes]]:
    """(sample rate, s16le bytes) per chunk of one piece."""
    with client.stream(
        piece,
        voice=gateway_voice(args.voice),
        language=args.language,
        instruct=args.instruct,
        **sampling_of(args),
    ) as chunks:
        for chunk in chunks:
            yield chunk.sample_rate, chunk.pcm16()


def _patch_wav_sizes(sink: BinaryIO, sample_rate: int, data_bytes: int) -> None:
    # Streaming wrote "unknown" sizes; a seekable file gets the real ones so every player is happy.
    try:
        if not sink.seekable():
            return
        sink.seek(0)
        sink.write(streaming_wav_header(sample_rate, data_bytes=data_bytes))
        sink.seek(0, os.SEEK_END)
    except OSError:
        return


class AudioWriter:
    """Writes s16le PCM chunks as they come (``wav``: a streaming header first, sizes patched at the end
    when the sink can seek; ``pcm``: raw)."""

    def __init__(self, sink: BinaryIO, fmt: str) -> None:
        self.sink, self.fmt = sink, fmt
        self.written, self.sample_rate = 0, 24000

    def write(self, sample_rate: int, pcm: bytes) -> None:
        if self.fmt == "wav" and self.written == 0:
            self.sample_rate = sample_rate
            self.sink.write(streaming_wav_header(sample_rate))
        self.sink.write(pcm)
        self.sink.flush()  # the point of streaming: the player gets audio now
        self.written += len(pcm)

    def finish(self) -> None:
        if self.fmt != "wav":
            return
        if self.written == 0:
            self.sink.write(streaming_wav_header(self.sample_rate, data_bytes=0))
        _patch_wav_sizes(self.sink, self.sample_rate, self.written)

    @property
    def seconds(self) -> float:
        return self.written // 2 / self.sample_rate


def cmd_stream(client: Qwen3TTSClient, args: argparse.Namespace, console: Console, stdin: TextIO) -> int:
    pieces, fmt = pieces_of(args, stdin), output_format(args)
    if fmt not in STREAM_FORMATS:
        raise UsageError(f"stream writes {' or '.join(STREAM_FORMATS)}; use 'speak' for {fmt}")
    sink = open_output(args.output, console)
    progress = Progress(len(pieces), console)
    writer = AudioWriter(sink, fmt)
    try:
        for done, piece in enumerate(pieces, start=1):
            for rate, pcm in stream_pcm(client, args, piece):
                writer.write(rate, pcm)
            progress.update(done)
        writer.finish()
    finally:
        if sink is not console.stdout:
            sink.close()
    if args.output is not None:
        console.info(f"wrote {args.output} ({writer.seconds:.2f} s)")
    return EXIT_OK


def stdin_fragments(stdin: TextIO) -> Iterator[str]:
    """stdin as it arrives (a token, a line: whatever one read returns), without waiting for EOF."""
    try:
        fileno = stdin.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        yield from iter(stdin.readline, "")  # an in-memory stream (tests)
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while data := os.read(fileno, 4096):
        if text := decoder.decode(data):
            yield text
    if tail := decoder.decode(b"", final=True):
        yield tail


def say_fragments(args: argparse.Namespace, stdin: TextIO) -> Iterator[str]:
    if not args.stream_input:
        text = read_text(args, stdin)
        if is_blank(text):  # white space or invisible characters only: the server would refuse it
            raise UsageError("the text is empty")
        return iter([text])
    if args.text is not None or args.file is not None:
        raise UsageError("--stream-input reads the text from stdin; give no text argument or --file")
    return stdin_fragments(stdin)


class Feeder(threading.Thread):
    """Sends the fragments to the session from a thread of its own, then ends the input."""

    def __init__(self, session: SpeechSession, fragments: Iterator[str]) -> None:
        super().__init__(name="qwen3-tts-feeder", daemon=True)
        self.session, self.fragments = session, fragments
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for fragment in self.fragments:
                self.session.send_text(fragment)
            self.session.end()
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def cmd_say(client: Qwen3TTSClient, args: argparse.Namespace, console: Console, stdin: TextIO) -> int:
    fmt = output_format(args)
    if fmt not in STREAM_FORMATS:
        raise UsageError(f"say writes {' or '.join(STREAM_FORMATS)}; use 'speak' for {fmt}")
    fragments = say_fragments(args, stdin)
    sink = open_output(args.output, console)
    writer = AudioWriter(sink, fmt)
    session = client.session(
        voice=gateway_voice(args.voice),
        language=args.language,
        instruct=args.instruct,
        lookahead_tokens=args.lookahead,
        **sampling_of(args),
    )
    try:
        with session:
            feeder = Feeder(session, fragments)
            feeder.start()
            for chunk in session:
                writer.write(chunk.sample_rate, chunk.pcm16())
            writer.finish()
            feeder.join(timeout=1.0)
    finally:
        if sink is not console.stdout:
            sink.close()
    if feeder.error is not None and not isinstance(feeder.error, Qwen3TTSError):
        raise feeder.error
    reason = session.finish_reason or "unknown"
    if reason != "stop":
        console.info(f"the session ended early: {reason}")
    if args.output is not None:
        console.info(f"wrote {args.output} ({writer.seconds:.2f} s)")
    return EXIT_OK


def cmd_clone(client: Qwen3TTSClient, args: argparse.Namespace, console: Console, stdin: TextIO) -> int:
    try:
        audio = args.audio.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.audio}: {exc.strerror or exc}") from None
    voice = client.create_voice(
        audio, ref_text=args.ref_text, name=args.name, x_vector_only=True if args.x_vector_only else None
    )
    console.stdout.write(f"{voice.id}\n".encode())
    console.stdout.flush()
    console.info(f"saved voice {voice.id}; use it with --voice {voice.model_id}")
    return EXIT_OK


def _voice_json(voice: Any) -> dict[str, Any]:
    return {
        "id": voice.id,
        "voice": voice.model_id,
        "name": voice.name,
        "ref_text": voice.ref_text,
        "x_vector_only": voice.x_vector_only,
        "duration_s": voice.duration_s,
        "created_at": voice.created_at,
    }


def _voice_row(voice: Any) -> str:
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(voice.created_at)) if voice.created_at else "-"
    duration = f"{voice.duration_s:.1f}s" if voice.duration_s is not None else "-"
    ref_text = (voice.ref_text or "")[:40]
    return f"{voice.model_id:<30} {voice.name or '-':<20} {duration:>7} {created:<16} {ref_text}"


def cmd_voices(client: Qwen3TTSClient, args: argparse.Namespace, console: Console, stdin: TextIO) -> int:
    action = args.action or "list"
    out: list[str] = []
    if action == "list":
        voices = client.list_voices()
        if getattr(args, "json", False):
            out.append(json.dumps([_voice_json(v) for v in voices], ensure_ascii=False, indent=2))
        elif voices:
            out.append(f"{'VOICE':<30} {'NAME':<20} {'LENGTH':>7} {'CREATED':<16} REF_TEXT")
            out.extend(_voice_row(v) for v in voices)
        else:
            console.info("no saved voices; create one with: qwen3-tts clone AUDIO --ref-text TEXT")
    elif action == "get":
        out.append(json.dumps(_voice_json(client.get_voice(args.voice_id)), ensure_ascii=False, indent=2))
    else:
        for voice_id in args.voice_ids:
            client.delete_voice(voice_id)
            console.info(f"deleted {voice_id}")
    if out:
        console.stdout.write(("\n".join(out) + "\n").encode())
        console.stdout.flush()
    return EXIT_OK


COMMANDS: dict[str, Callable[[Qwen3TTSClient, argparse.Namespace, Console, TextIO], int]] = {
    "speak": cmd_speak,
    "stream": cmd_stream,
    "say": cmd_say,
    "design": cmd_design,
    "clone": cmd_clone,
    "voices": cmd_voices,
}


# ------------------------------------------------------------------------------------------ errors


def explain(error: Qwen3TTSError, base_url: str) -> tuple[int, str]:
    """(exit code, a message a person can act on) for an API error."""
    if isinstance(error, APIConnectionError):
        return EXIT_CONNECTION, (
            f"{error.message}\nis the gateway running at {base_url}? (set --base-url or ${ENV_BASE_URL})"
        )
    status = error.status_code or 0
    message = f"{status}: {error.message}" if status else error.message
    if status == 401:
        message += f"\nset --api-key or ${ENV_API_KEY}"
    elif status == 404 and CLONE_PREFIX in error.message.lower():
        message += "\nlist your saved voices with: qwen3-tts voices list"
    elif status == 413:
        message += "\nuse a shorter or smaller reference clip"
    if isinstance(error, APIStatusError) and 400 <= status < 500:
        return EXIT_CLIENT_ERROR, message
    if error.retry_after:
        message += f"\nthe gateway asks to retry in {error.retry_after:g}s"
    return EXIT_SERVER_ERROR, message


# ------------------------------------------------------------------------------------------ main


def _parse(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, stderr: TextIO
) -> argparse.Namespace | int:
    try:
        with contextlib.redirect_stderr(stderr):  # argparse prints usage errors to sys.stderr itself
            return parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: BinaryIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    parser = build_parser()
    args = _parse(parser, argv, stderr or sys.stderr)
    if isinstance(args, int):
        return args
    console = Console(stdout or sys.stdout.buffer, stderr or sys.stderr, quiet=args.quiet)
    base_url = resolve_base_url(args.base_url)
    try:
        with Qwen3TTSClient(
            base_url=base_url,
            api_key=args.api_key,
            timeout=args.timeout,
            max_retries=max(0, args.max_retries),
        ) as client:
            return COMMANDS[args.command](client, args, console, stdin or sys.stdin)
    except UsageError as exc:
        parser.print_usage(console.stderr)
        console.error(str(exc))
        return EXIT_USAGE
    except Qwen3TTSError as exc:
        code, message = explain(exc, base_url)
        console.error(message)
        return code
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (a player, `head`) went away: not an error worth a traceback. Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        if stdout is None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
